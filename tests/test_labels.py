"""Object labels: shapes from masks (exact on drawn shapes), the cross-attention recorder (images
byte-identical with it on, one heat map per class word the prompt names), the labels stage on
inpainting masks and on attention, and the YOLO / COCO exports read back by pycocotools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from synthset.errors import SynthsetError
from synthset.labels.shapes import box_of, mask_iou, polygon_of, regions, threshold_map
from synthset.pipeline import open_run, run_stage, stage_export, stage_label
from synthset.plan import WorkItem
from synthset.recipe import GeneratorSpec, LabelsSpec, recipe_from_dict
from synthset.store.atomic import read_jsonl

SIZE = 32


# ----------------------------------------------------------------------------- shapes


def test_box_and_polygon_are_exact_on_a_drawn_rectangle() -> None:
    mask = np.zeros((20, 30), dtype=bool)
    mask[4:11, 7:19] = True  # rows 4..10, columns 7..18
    assert box_of(mask) == (7, 4, 19, 11)
    assert sorted(polygon_of(mask, tolerance=0.5)) == [(7, 4), (7, 11), (19, 4), (19, 11)]
    ell = np.zeros((10, 10), dtype=bool)
    ell[2:8, 2:4] = True
    ell[6:8, 2:8] = True  # an L: six corners on the pixel grid
    assert sorted(polygon_of(ell, tolerance=0.5)) == [
        (2, 2),
        (2, 8),
        (4, 2),
        (4, 6),
        (8, 6),
        (8, 8),
    ]


def test_regions_keep_the_largest_and_drop_specks() -> None:
    mask = np.zeros((40, 40), dtype=bool)
    mask[2:12, 2:12] = True  # 100 px
    mask[20:26, 20:26] = True  # 36 px
    mask[35, 35] = True  # a 1-px speck
    found = regions(mask, max_regions=3, min_area=0.002)  # floor 3.2 px
    assert [int(r.sum()) for r in found] == [100, 36]
    assert box_of(found[0]) == (2, 2, 12, 12) and box_of(found[1]) == (20, 20, 26, 26)
    assert [int(r.sum()) for r in regions(mask, 1, 0.0)] == [100]


def test_otsu_splits_a_bimodal_map_and_a_flat_map_is_empty() -> None:
    rng = np.random.default_rng(0)
    heat = rng.uniform(0.0, 0.2, (32, 32))
    heat[8:20, 10:24] = rng.uniform(0.7, 1.0, (12, 14))
    truth = np.zeros_like(heat, dtype=bool)
    truth[8:20, 10:24] = True
    assert mask_iou(threshold_map(heat, "otsu"), truth) == 1.0
    assert not threshold_map(np.full((8, 8), 0.3), "otsu").any()


# ----------------------------------------------------------------------------- recorder


def _items(prompts: list[tuple[int, str]]) -> list[WorkItem]:
    names = ["cat", "dog"]
    return [
        WorkItem(f"i{k}", c, names[c], names[c], p, 100 + k) for k, (c, p) in enumerate(prompts)
    ]


@pytest.mark.parametrize("which", ["tiny_sd_path", "tiny_sdxl_path"])
def test_recording_attention_leaves_images_byte_identical(
    which: str, request: pytest.FixtureRequest
) -> None:
    from synthset.generators.attention import AttentionRecordingGenerator
    from synthset.generators.text2image import Text2ImageGenerator
    from synthset.store.labels import read_heat_maps

    model = request.getfixturevalue(which)
    spec = GeneratorSpec(kind="text2image", model=str(model), steps=3, guidance_scale=3.0)
    items = _items([(0, "a photo of a cat and a dog"), (1, "a photo of a dog")])
    plain = Text2ImageGenerator(spec).generate(items)
    recorder = AttentionRecordingGenerator(Text2ImageGenerator(spec), LabelsSpec(), ["cat", "dog"])
    traced = recorder.generate(items)
    for a, b in zip(plain, traced, strict=True):
        assert a.tobytes() == b.tobytes()
    both = read_heat_maps(recorder.side_files(items[0])[0].data)
    alone = read_heat_maps(recorder.side_files(items[1])[0].data)
    assert sorted(both) == [0, 1] and sorted(alone) == [1]  # one map per class word named
    latent = 64 // 2 if which == "tiny_sd_path" else both[0].shape[0]
    assert both[0].shape == (latent, latent) and both[0].min() >= 0 and both[0].max() > 0
    assert not np.allclose(both[0], both[1])  # different words attend differently


def test_guidance_heat_is_where_the_prompt_changes_the_prediction(tiny_sd_path: Path) -> None:
    """heat guidance: images unchanged; a one-class prompt's map is |conditional -
    unconditional| UNet output, each step scaled to its maximum, summed over steps (checked
    against a hook of our own on a plain pipeline); a
    two-class prompt's map is split between its classes, pixel by pixel, adding up to it."""
    import torch

    from synthset.generators.attention import AttentionRecordingGenerator
    from synthset.generators.text2image import Text2ImageGenerator
    from synthset.store.labels import read_heat_maps

    spec = GeneratorSpec(kind="text2image", model=str(tiny_sd_path), steps=3, guidance_scale=3.0)
    items = _items([(0, "a photo of a cat and a dog"), (1, "a photo of a dog")])
    plain = Text2ImageGenerator(spec)
    summed: list[torch.Tensor] = []

    def hook(_m: Any, _a: Any, out: Any) -> None:
        uncond, cond = out[0].chunk(2)  # diffusers pipelines call the UNet with return_dict=False
        step = (cond - uncond).abs().sum(1)
        summed.append(step / step.amax((1, 2), keepdim=True))

    handle = plain.pipe.unet.register_forward_hook(hook)
    expected = plain.generate(items)
    handle.remove()
    total = torch.stack(summed).sum(0).numpy()
    labels = LabelsSpec(attention={"heat": "guidance"})
    recorder = AttentionRecordingGenerator(Text2ImageGenerator(spec), labels, ["cat", "dog"])
    images = recorder.generate(items)
    assert [a.tobytes() for a in images] == [b.tobytes() for b in expected]
    both = read_heat_maps(recorder.side_files(items[0])[0].data)
    alone = read_heat_maps(recorder.side_files(items[1])[0].data)
    assert sorted(both) == [0, 1] and sorted(alone) == [1]
    np.testing.assert_allclose(alone[1], total[1], rtol=1e-5)
    assert not ((both[0] > 0) & (both[1] > 0)).any()  # each pixel goes to one class
    np.testing.assert_allclose(both[0] + both[1], total[0], rtol=1e-5)
    assert (both[0] > 0).any() and (both[1] > 0).any()


def test_a_class_word_missing_from_the_prompt_is_a_one_line_error(tiny_sd_path: Path) -> None:
    from synthset.generators.attention import AttentionRecordingGenerator
    from synthset.generators.text2image import Text2ImageGenerator

    spec = GeneratorSpec(kind="text2image", model=str(tiny_sd_path), steps=2)
    labels = LabelsSpec(attention={"words": {"cat": "kitten"}})
    recorder = AttentionRecordingGenerator(Text2ImageGenerator(spec), labels, ["cat", "dog"])
    with pytest.raises(SynthsetError, match=r"'kitten' of class 'cat' is not among the tokens"):
        recorder.generate(_items([(0, "a photo of a cat")]))
    with pytest.raises(SynthsetError, match="'horse' is not one of the run's classes"):
        AttentionRecordingGenerator(
            Text2ImageGenerator(spec), LabelsSpec(attention={"words": {"horse": "h"}}), ["cat"]
        )


def test_joint_attention_models_are_refused_in_one_line(tiny_sd3_path: Path) -> None:
    from synthset.generators.attention import AttentionRecordingGenerator
    from synthset.generators.text2image import Text2ImageGenerator

    spec = GeneratorSpec(kind="text2image", model=str(tiny_sd3_path), steps=2)
    with pytest.raises(SynthsetError, match="no UNet with a tokenizer"):
        AttentionRecordingGenerator(Text2ImageGenerator(spec), LabelsSpec(), ["cat"])


# ----------------------------------------------------------------------------- recipes


def _recipe(out: Path, real: Path, generator: dict[str, Any], **more: Any) -> Any:
    data: dict[str, Any] = {
        "seed": 3,
        "output_dir": str(out),
        "classes": {"names": ["red", "blue"]},
        "real": {"source": "imagefolder", "path": str(real / "images")},
        "prompts": {"template": "a photo of a {class}"},
        "generate": {"images_per_class": 2, "batch_size": 4, "generator": generator},
        **more,
    }
    return recipe_from_dict(data)


def _sd(model: Path, **kw: Any) -> dict[str, Any]:
    return {
        "kind": "text2image",
        "model": str(model),
        "steps": 3,
        "height": SIZE,
        "width": SIZE,
        **kw,
    }


def test_bad_label_recipes_are_one_line_errors(tiny_sd_path: Path, real_folder: Path) -> None:
    with pytest.raises(SynthsetError, match="inpaint_mask takes the inpaint mode's object mask"):
        _recipe(Path("o"), real_folder, _sd(tiny_sd_path), labels={"method": "inpaint_mask"})
    with pytest.raises(SynthsetError, match="guidance_scale is 1.0 .no unconditional pass"):
        _recipe(
            Path("o"),
            real_folder,
            _sd(tiny_sd_path, guidance_scale=1.0),
            labels={"attention": {"heat": "guidance"}},
        )
    with pytest.raises(SynthsetError, match="fixed threshold lies in"):
        _recipe(Path("o"), real_folder, _sd(tiny_sd_path), labels={"threshold": 1.5})
    with pytest.raises(SynthsetError, match="generator kind 'tiny' has none"):
        recipe_from_dict(
            {
                "classes": {"names": ["a"]},
                "generate": {"generator": {"kind": "tiny", "model": "x"}},
                "labels": {},
            }
        )


def test_inpaint_masks_become_exact_boxes_and_read_back_in_coco(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    from pycocotools.coco import COCO

    gen = _sd(tiny_sd_path, kind="inpaint", mask="folder", mask_dir=str(real_folder / "masks"))
    r = _recipe(
        tmp_path / "run",
        real_folder,
        gen,
        labels={"method": "inpaint_mask"},
        export={"formats": ["yolo", "coco", "webdataset", "hf"], "val_fraction": 0.0},
    )
    run = open_run(r)
    summary = stage_label(r, run, progress=False)
    assert summary is not None and summary["images"] == 4 and summary["own_class_missing"] == 0
    rows = read_jsonl(run.labels / "labels.jsonl")
    for row in rows:  # the square of real_folder is [8:24, 8:24]
        (obj,) = row["objects"]
        assert obj["box"] == [8, 8, 24, 24] and obj["area"] == 256
        assert obj["class_id"] == row["label"]
        mask = np.asarray(Image.open(run.labels / row["mask_file"]))
        assert (mask == 1).sum() == 256 and (mask > 1).sum() == 0  # object 1 is the square

    stage_export(r, run, progress=False)
    coco = COCO(str(run.export / "coco" / "annotations.json"))
    assert len(coco.getImgIds()) == 4 and len(coco.getAnnIds()) == 4
    ann = coco.loadAnns(coco.getAnnIds())[0]
    assert ann["bbox"] == [8, 8, 16, 16]
    drawn = coco.annToMask(ann)
    truth = np.zeros((SIZE, SIZE), dtype=bool)
    truth[8:24, 8:24] = True
    assert mask_iou(drawn.astype(bool), truth) > 0.95  # the polygon rasterises to the square
    img = coco.loadImgs(ann["image_id"])[0]
    assert (run.export / "coco" / "images" / img["file_name"]).is_file()

    import datasets
    import webdataset

    shards = sorted(str(p) for p in (run.export / "webdataset").glob("*.tar"))
    for sample in webdataset.WebDataset(shards, shardshuffle=False):
        (obj,) = json.loads(sample["json"])["objects"]
        assert obj["box"] == [8, 8, 24, 24]
    ds = datasets.load_from_disk(str(run.export / "hf" / "dataset"))
    assert ds.features["objects"]["category"].feature.names == ["red", "blue"]
    for row in ds:
        assert row["objects"]["bbox"] == [[8.0, 8.0, 16.0, 16.0]]
        assert row["objects"]["category"] == [row["label"]] and row["objects"]["area"] == [256]

    run_stage("report", r, run, progress=False)
    html = run.report.read_text()
    section = html[html.index('<h2 id="labels">') :]
    assert "4 objects in 4 images" in section and "data:image/png;base64," in section

    yolo = run.export / "yolo"
    data = (yolo / "data.yaml").read_text()
    assert "names:" in data and "0: red" in data and "1: blue" in data
    label_files = sorted((yolo / "labels" / "train").glob("*.txt"))
    assert len(label_files) == 4
    for f in label_files:
        cls, cx, cy, w, h = f.read_text().split()
        assert (float(cx), float(cy), float(w), float(h)) == (0.5, 0.5, 0.5, 0.5)
        assert (yolo / "images" / "train" / f.with_suffix(".png").name).is_file()
    # ultralytics' own dataset loader reads it: every image, its class, the square's box
    dataset = ultralytics_dataset(yolo, tmp_path, "detect")
    assert len(dataset) == 4
    for lbl in dataset.labels:
        assert lbl["cls"].ravel().tolist() in ([0.0], [1.0])
        assert np.allclose(lbl["bboxes"], [[0.5, 0.5, 0.5, 0.5]])


def ultralytics_dataset(root: Path, home: Path, task: str) -> Any:
    """``ultralytics.data.YOLODataset`` on an exported folder's train split, offline, with its
    settings file under ``home``."""
    import os

    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(home / "ultralytics-config"))
    from ultralytics.data import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(root / "data.yaml"))
    return YOLODataset(img_path=data["train"], data=data, task=task, augment=False, imgsz=32)


def test_cross_attention_labels_through_the_pipeline(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    labels = {"method": "cross_attention", "threshold": 0.4, "max_objects": 2}
    export = {"formats": ["coco"], "coco_segmentation": "rle"}
    r = _recipe(tmp_path / "run", real_folder, _sd(tiny_sd_path), labels=labels, export=export)
    run = open_run(r)
    run_stage("export", r, run, progress=False)
    meta = read_jsonl(run.images / "metadata.jsonl")
    rows = {row["item_id"]: row for row in read_jsonl(run.labels / "labels.jsonl")}
    assert len(rows) == len(meta) == 4
    for m in meta:
        assert (run.root / "attention" / m["file_name"]).with_suffix(".npz").is_file()
        row = rows[m["item_id"]]
        assert row["objects"], row  # a 0.4 threshold of a scaled map always finds a region
        assert {o["class_id"] for o in row["objects"]} == {m["label"]}
        for o in row["objects"]:
            x0, y0, x1, y1 = o["box"]
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
    coco = COCO(str(run.export / "coco" / "annotations.json"))
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert int(mask_utils.area(ann["segmentation"])) == ann["area"]

    # the same labels again: generate, labels and export are all current
    from synthset.pipeline import StageLog

    log = StageLog()
    run_stage("export", r, run, progress=False, log=log)
    assert {s for _, s, _ in log.entries} <= {"skipped", "off"}
    assert log.status("generate") == log.status("labels") == log.status("export") == "skipped"
    # a new threshold relabels without regenerating
    r2 = _recipe(
        tmp_path / "run",
        real_folder,
        _sd(tiny_sd_path),
        labels={**labels, "threshold": 0.8},
        export=export,
    )
    log = StageLog()
    run_stage("labels", r2, run, progress=False, log=log)
    assert log.status("generate") == "skipped" and log.status("labels") == "ran"
    areas = {o["area"] for row in read_jsonl(run.labels / "labels.jsonl") for o in row["objects"]}
    old = {o["area"] for row in rows.values() for o in row["objects"]}
    assert max(areas) <= max(old) and areas != old  # a higher threshold, smaller regions


def test_box_formats_without_labels_are_a_one_line_error(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    r = _recipe(tmp_path / "run", real_folder, _sd(tiny_sd_path), export={"formats": ["yolo"]})
    with pytest.raises(SynthsetError, match="export.formats yolo writes boxes and masks"):
        stage_export(r, open_run(r), progress=False)


def test_a_prompt_naming_two_classes_gets_an_object_of_each(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    prompts = {
        "templates": ["a {class} and a {other} square"],
        "slots": {"other": ["red", "blue"]},
        "combine": "cross",
        "label_check": "off",
        "per_class": 2,
    }
    r = _recipe(
        tmp_path / "run",
        real_folder,
        _sd(tiny_sd_path),
        labels={"threshold": 0.5},
        export={"formats": ["yolo"], "yolo_task": "segment", "val_fraction": 0.0},
    )
    r = r.model_copy(update={"prompts": r.prompts.model_copy(update=prompts)})
    run = open_run(r)
    stage_export(r, run, progress=False)
    meta = {m["item_id"]: m for m in read_jsonl(run.images / "metadata.jsonl")}
    rows = read_jsonl(run.labels / "labels.jsonl")
    for row in rows:
        named = {
            c for c, name in enumerate(["red", "blue"]) if name in meta[row["item_id"]]["prompt"]
        }
        assert {o["class_id"] for o in row["objects"]} == named
    assert any(len(row["objects"]) == 2 for row in rows)  # "a red and a blue square"
    dataset = ultralytics_dataset(run.export / "yolo", tmp_path, "segment")
    by_file = {Path(lbl["im_file"]).stem: lbl for lbl in dataset.labels}
    for row in rows:
        lbl = by_file[row["item_id"]]
        assert sorted(lbl["cls"].ravel().tolist()) == sorted(o["class_id"] for o in row["objects"])
        assert len(lbl["segments"]) == len(row["objects"])


def test_ultralytics_trains_a_segmentation_model_on_the_export(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    """One epoch of ``YOLO("yolov8n-seg.yaml").train`` (built from its config: no download) on a
    YOLO segmentation export of inpainting labels, then a prediction with the trained weights."""
    gen = _sd(tiny_sd_path, kind="inpaint", mask="folder", mask_dir=str(real_folder / "masks"))
    export = {"formats": ["yolo"], "yolo_task": "segment", "val_fraction": 0.0}
    r = _recipe(
        tmp_path / "run", real_folder, gen, labels={"method": "inpaint_mask"}, export=export
    )
    run = open_run(r)
    stage_export(r, run, progress=False)
    ultralytics_dataset(run.export / "yolo", tmp_path, "segment")  # offline settings, once
    from ultralytics import YOLO

    model = YOLO("yolov8n-seg.yaml")
    metrics = model.train(
        data=str(run.export / "yolo" / "data.yaml"),
        epochs=1,
        imgsz=32,
        batch=4,
        device="cpu",
        workers=0,
        plots=False,
        amp=False,
        project=str(tmp_path / "yolo-runs"),
        name="seg",
        verbose=False,
    )
    assert {"metrics/mAP50(B)", "metrics/mAP50(M)"} <= set(metrics.results_dict)
    weights = tmp_path / "yolo-runs" / "seg" / "weights" / "last.pt"
    (result,) = YOLO(str(weights)).predict(next((run.images).rglob("*.png")), imgsz=32)
    assert result.orig_shape == (SIZE, SIZE) and result.names == {0: "red", 1: "blue"}

    # the trained model labels another run (DiffuGen's supervised labeler): only mapped classes
    detector = {
        "framework": "ultralytics",
        "weights": str(weights),
        "class_map": {"red": "red"},
        "confidence": 0.0,
        "image_size": 32,
    }
    other = _recipe(
        tmp_path / "other",
        real_folder,
        _sd(tiny_sd_path),
        labels={"method": "detector", "detector": detector},
    )
    summary = stage_label(other, open_run(other), progress=False)
    assert summary is not None and summary["images"] == 4
    rows = read_jsonl(tmp_path / "other" / "labels" / "labels.jsonl")
    assert all(o["class_name"] == "red" for r in rows for o in r["objects"])
    for r in rows:  # a blue image can never show its own class: flagged
        assert ("own_class_missing" in r["flags"]) == (r["label"] == 1 or not r["objects"])


def test_a_torchvision_detector_labels_with_its_class_map(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    """A torchvision Faster R-CNN (random weights, saved and loaded as safetensors): detections
    of unmapped classes are dropped, boxes stay inside the image, the mask of a box-only model
    is its box."""
    import torch
    from safetensors.torch import save_file
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3
    )
    weights = tmp_path / "frcnn.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    detector = {
        "framework": "torchvision",
        "architecture": "fasterrcnn_mobilenet_v3_large_320_fpn",
        "weights": str(weights),
        "categories": ["__background__", "red", "blue"],
        "class_map": {"blue": "blue"},
        "confidence": 0.0,
    }
    r = _recipe(
        tmp_path / "run",
        real_folder,
        _sd(tiny_sd_path),
        labels={"method": "detector", "detector": detector, "max_objects": 5},
    )
    summary = stage_label(r, open_run(r), progress=False)
    assert summary is not None and summary["objects"] > 0
    for row in read_jsonl(tmp_path / "run" / "labels" / "labels.jsonl"):
        mask = np.asarray(Image.open(tmp_path / "run" / "labels" / row["mask_file"]))
        for number, o in enumerate(row["objects"], 1):
            assert o["class_name"] == "blue"
            x0, y0, x1, y1 = o["box"]
            assert 0 <= x0 <= x1 <= SIZE and 0 <= y0 <= y1 <= SIZE
            assert not (mask == number)[:, :x0].any() and not (mask == number)[:y0].any()

    # bad input: a weights file that does not exist, a mapping to an unknown class
    missing = {**detector, "weights": str(tmp_path / "nope.safetensors")}
    bad = _recipe(
        tmp_path / "bad",
        real_folder,
        _sd(tiny_sd_path),
        labels={"method": "detector", "detector": missing},
    )
    with pytest.raises(
        SynthsetError, match="labels.detector.weights: .*nope.safetensors does not exist"
    ):
        stage_label(bad, open_run(bad), progress=False)
    unknown = {**detector, "class_map": {"blue": "green"}}
    bad = _recipe(
        tmp_path / "bad2",
        real_folder,
        _sd(tiny_sd_path),
        labels={"method": "detector", "detector": unknown},
    )
    with pytest.raises(SynthsetError, match="labels.detector.class_map: 'green' is not a class"):
        stage_label(bad, open_run(bad), progress=False)
    with pytest.raises(SynthsetError, match="method detector needs labels.detector"):
        _recipe(tmp_path / "bad3", real_folder, _sd(tiny_sd_path), labels={"method": "detector"})


def test_report_reads_only_the_first_rows_of_each_class(tmp_path: Path) -> None:
    from synthset.report.labels_section import _first_rows
    from synthset.store.labels import LABELS_FILE
    from synthset.store.run_folder import RunFolder

    run = RunFolder(tmp_path / "run")
    run.labels.mkdir(parents=True)
    rows = [{"item_id": f"i{k}", "label": k % 2} for k in range(6)]
    lines = [json.dumps(r) for r in rows] + ['{"no label": true}']  # read past: a KeyError
    (run.labels / LABELS_FILE).write_text("\n".join(lines) + "\n")
    shown = _first_rows(run, {0, 1}, per_class=2)
    assert [r["item_id"] for r in shown[0]] == ["i0", "i2"]
    assert [r["item_id"] for r in shown[1]] == ["i1", "i3"]
    with pytest.raises(KeyError):  # a class with fewer rows than asked reads to the end
        _first_rows(run, {0, 1, 2}, per_class=2)


def test_reduced_labels_benchmark_guidance_masks_find_the_drawn_digit(tmp_path: Path) -> None:
    """benchmarks/labels_digits.py, reduced (60 base steps, 3 digits per class, one seed): on
    the same generated digits, the guidance map's mask overlaps the drawn ink far more than a
    centred box of the mean ink size does, and more than the digit token's attention."""
    import sys

    from synthset.adapt.tiny_base import BaseSettings, pretrain_tiny_base
    from synthset.pipeline import stage_label

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import labels_digits as bench

    split = bench.digit_split()
    canvases = bench.canvas_digits(tmp_path / "canvas", split["train"], 0)
    settings = BaseSettings(
        "class",
        None,
        image_size=bench.CANVAS,
        cross_attention="low",
        pooled_text=False,
        vae_steps=40,
        steps=60,
        batch_size=64,
    )
    names = [str(c) for c in range(10)]
    base = pretrain_tiny_base(
        [(p, c) for p, c, _ in canvases], names, settings, tmp_path / "b", False
    )
    scores = {}
    for heat in ("attention", "guidance"):
        recipe = bench.labels_recipe(0, tmp_path, base, 3, heat=heat)
        run = open_run(recipe)
        stage_label(recipe, run, progress=False)
        scores[heat] = bench.score_run(run.root, heat)
    guidance, attention = scores["guidance"], scores["attention"]
    assert guidance["images_with_ink"] == attention["images_with_ink"] == 30  # the same images
    assert guidance["mask_iou"]["centred_box"] == attention["mask_iou"]["centred_box"]
    iou = guidance["mask_iou"]["guidance"]
    assert iou > 1.5 * guidance["mask_iou"]["centred_box"], scores
    assert iou > attention["mask_iou"]["attention"] + 0.15, scores
    assert guidance["box_iou"]["guidance_at_0.5"] > 2 * guidance["box_iou"]["centred_box_at_0.5"]
