"""The retrieval baseline: real images per class from an unlabeled pool, never a copy of a real
val/test image, trained on beside (and with) the synthetic set at equal counts."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import cli, copy_run, toy_digits
from PIL import Image

from synthset.classes import class_infos
from synthset.curate.retrieval import retrieve
from synthset.data.splits import load_splits
from synthset.errors import SynthsetError
from synthset.pipeline import StageLog, run_all
from synthset.recipe import EvaluateSpec, RetrieveSpec, recipe_from_dict


def _unlabeled_pool(run: Path, pool: Path) -> dict[str, int]:
    """The run's real train images (renamed, flat), noise, and exact and 1-pixel-shifted
    copies of real test images; returns each file's hidden label (-1 noise, -2 a test copy)."""
    real = load_splits(run / "real" / "splits.json")
    pool.mkdir(parents=True)
    truth: dict[str, int] = {}
    for i, (path, label) in enumerate(real["train"]):
        shutil.copyfile(path, pool / f"img{i:05d}.png")
        truth[f"img{i:05d}.png"] = label
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(pool / f"n{i}.png")
        truth[f"n{i}.png"] = -1
    for i, (path, _) in enumerate(real["test"][:10]):
        arr = np.asarray(Image.open(path).convert("L"))
        if i % 2:
            arr = np.roll(arr, 1, axis=1)
        Image.fromarray(arr).save(pool / f"copy{i}.png")
        truth[f"copy{i}.png"] = -2
    return truth


def test_retrieval_skips_test_copies_and_trains_beside_synthetic_at_equal_counts(
    generated: Path, tmp_path: Path
) -> None:
    out = copy_run(generated, tmp_path)
    truth = _unlabeled_pool(out, tmp_path / "pool")
    retrieve_spec = {"pool": str(tmp_path / "pool"), "by": "prototypes", "shots": 3}
    sets = [
        f"retrieve={json.dumps(retrieve_spec)}",
        "evaluate.train_sets=[synthetic, retrieved, retrieved+synthetic]",
    ]
    log = StageLog()
    run_all(toy_digits(out, None, *sets), progress=False, log=log)
    assert log.status("retrieve") == "ran" and log.status("generate") == "skipped"

    rows = [json.loads(line) for line in (out / "retrieve" / "retrieved.jsonl").open()]
    assert len(rows) == 120 and all(sum(r["label"] == c for r in rows) == 12 for c in range(10))
    assert not [r for r in rows if truth[r["pool_key"]] == -2]  # no test copy, even shifted
    summary = json.loads((out / "retrieve" / "summary.json").read_text())
    # the 10 planted copies, and any real train digit that is itself a near-copy of a test one
    assert summary["leaks_skipped"] >= 10 and summary["pool_images"] == len(truth)
    precision = np.mean([truth[r["pool_key"]] == r["label"] for r in rows])
    assert precision >= 0.8, precision  # real-trained features + 3 labelled images per class
    for r in rows:  # the copies hold the pool image's pixels
        copy = np.asarray(Image.open(out / "retrieve" / r["path"]).convert("L"))
        assert (copy == np.asarray(Image.open(tmp_path / "pool" / r["pool_key"]))).all()

    cas = json.loads((out / "evaluate" / "cas.json").read_text())["train_sets"]
    assert cas["retrieved"]["summary"]["n_retrieved"] == 120
    assert cas["retrieved"]["summary"]["n_synthetic"] == 0
    both = cas["retrieved+synthetic"]["summary"]
    assert both["n_retrieved"] == 120 and both["n_synthetic"] == 120 and both["n_train"] == 240

    from synthset.stages import write_run_report
    from synthset.store.run_folder import RunFolder

    write_run_report(toy_digits(out, None, *sets), RunFolder(out))
    html = (out / "report.html").read_text()
    assert '<h2 id="retrieval">' in html and "Retrieved <b>120</b> of" in html
    assert "<td>retrieved+synthetic</td>" in html and 'alt="retrieved 7"' in html

    log = StageLog()
    run_all(toy_digits(out, None, *sets), progress=False, log=log)
    assert log.status("retrieve") == "skipped" and log.status("evaluate") == "skipped"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "pool" / "new.png")
    log = StageLog()
    run_all(toy_digits(out, None, *sets), progress=False, log=log)
    assert log.status("retrieve") == "ran"  # a changed pool is retrieved from again


def _coloured(value: int) -> Image.Image:
    return Image.new("RGB", (16, 16), (value, value, value))


def real_splits(root: Path) -> dict[str, list[tuple[Path, int]]]:
    """A few real images per split (classes white 0 and black 1)."""
    splits: dict[str, list[tuple[Path, int]]] = {}
    for split, values in {"train": (240, 10), "val": (235, 15), "test": (245, 20)}.items():
        splits[split] = []
        for label, v in enumerate(values):
            path = root / split / f"{label}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            _coloured(v).save(path)
            splits[split].append((path, label))
    return splits


def test_clip_retrieval_takes_the_images_closest_to_each_class_prompt(
    tmp_path: Path, tiny_clip: Path
) -> None:
    clip = tiny_clip
    pool = tmp_path / "pool"
    pool.mkdir()
    values = [250, 200, 160, 5, 40, 90]
    for i, v in enumerate(values):
        _coloured(v).save(pool / f"{i}.png")
    spec = RetrieveSpec(
        pool=pool, by="clip", clip_model=str(clip), templates=["{}"], leak_check={"splits": []}
    )
    classes = class_infos(["white", "black"])
    summary = retrieve(
        spec,
        classes,
        real_splits(tmp_path / "real"),
        {0: 3, 1: 3},
        tmp_path / "out",
        tmp_path / "cache",
        EvaluateSpec(),
        progress=False,
    )
    rows = [json.loads(line) for line in (tmp_path / "out" / "retrieved.jsonl").open()]
    picked = {c: [values[int(r["pool_key"][0])] for r in rows if r["label"] == c] for c in (0, 1)}
    assert sorted(picked[0]) == [160, 200, 250] and sorted(picked[1]) == [5, 40, 90], picked
    for c in (0, 1):  # each class's images in order of similarity to its prompt
        sims = [r["similarity"] for r in rows if r["label"] == c]
        assert sims == sorted(sims, reverse=True) and min(sims) > 0
    assert summary["per_class"] == {"white": 3, "black": 3}
    assert list((tmp_path / "cache").glob("pool-*.npz"))  # embeddings cached


def test_clip_plus_caption_ranks_by_clip_only_the_images_captioned_with_the_class(
    tmp_path: Path, tiny_clip: Path
) -> None:
    """A bright image captioned 'black' can only be retrieved as black, and a dark one
    captioned 'white' only as white; within a class, CLIP similarity orders them."""
    values = [250, 200, 160, 5, 40, 90]
    captions = ["white", "black", "white", "white", "black", "black"]
    items = [
        (f"{i}", _coloured(v), c) for i, (v, c) in enumerate(zip(values, captions, strict=True))
    ]
    (tmp_path / "pool").mkdir()
    pool = _write_pool("folder", tmp_path / "pool", items)
    spec = RetrieveSpec(
        pool=pool,
        by="clip+caption",
        clip_model=str(tiny_clip),
        templates=["{}"],
        leak_check={"splits": []},
    )
    splits = real_splits(tmp_path / "real")
    classes = class_infos(["white", "black"])
    retrieve(spec, classes, splits, {0: 2, 1: 2}, tmp_path / "out", tmp_path / "c", EvaluateSpec())
    rows = [json.loads(line) for line in (tmp_path / "out" / "retrieved.jsonl").open()]
    picked = {
        c: [values[int(r["pool_key"].split(".")[0])] for r in rows if r["label"] == c]
        for c in (0, 1)
    }
    # plain CLIP would take white {250, 200} and black {5, 40}
    assert {c: sorted(v) for c, v in picked.items()} == {0: [160, 250], 1: [40, 90]}, picked
    for c in (0, 1):  # ranked by CLIP within the captioned images
        sims = [r["similarity"] for r in rows if r["label"] == c]
        assert sims == sorted(sims, reverse=True)
    with pytest.raises(ValueError, match="retrieve.by clip\\+caption needs retrieve.clip_model"):
        RetrieveSpec(pool=pool, by="clip+caption")


def _write_pool(kind: str, root: Path, items: list[tuple[str, Image.Image, str]]) -> Path:
    """The same captioned images as an image folder, WebDataset shards or a HF dataset."""
    if kind == "folder":
        for key, img, caption in items:
            img.save(root / f"{key}.png")
            (root / f"{key}.txt").write_text(caption)
        return root
    if kind == "webdataset":
        for shard, part in enumerate((items[:3], items[3:])):
            with tarfile.open(root / f"shard-{shard:03d}.tar", "w") as tar:
                for key, img, caption in part:
                    for ext, data in (("png", _png(img)), ("txt", caption.encode())):
                        info = tarfile.TarInfo(f"{key}.{ext}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
        return root
    import datasets

    ds = datasets.Dataset.from_dict(
        {"image": [img for _, img, _ in items], "text": [c for _, _, c in items]},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")}),
    )
    ds.save_to_disk(str(root / "hf"))
    return root / "hf"


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["folder", "webdataset", "hf"])
def test_caption_retrieval_reads_every_pool_format_alike(tmp_path: Path, kind: str) -> None:
    captions = ["a white cat", "Black dog", "white and black", "a black car", "sky", "WHITE"]
    items = [(f"k{i}", _coloured(40 * i + 20), c) for i, c in enumerate(captions)]
    (tmp_path / "pool").mkdir()
    pool = _write_pool(kind, tmp_path / "pool", items)
    spec = RetrieveSpec(pool=pool, by="caption", leak_check={"splits": []})
    classes = class_infos(["white", "black"])
    splits = real_splits(tmp_path / "real")
    retrieve(spec, classes, splits, {0: 2, 1: 2}, tmp_path / "out", tmp_path / "c", EvaluateSpec())
    rows = [json.loads(line) for line in (tmp_path / "out" / "retrieved.jsonl").open()]
    # captions naming one class, in pool order; 'white and black' names both and matches none
    assert [(r["label"], r["caption"]) for r in rows] == [
        (0, "a white cat"),
        (0, "WHITE"),
        (1, "Black dog"),
        (1, "a black car"),
    ]
    pixels = [int(np.asarray(Image.open(tmp_path / "out" / r["path"]))[0, 0, 0]) for r in rows]
    assert pixels == [20, 220, 60, 140]

    with pytest.raises(SynthsetError, match=r"class 'white' has 2 clean pool images") as err:
        retrieve(
            spec, classes, splits, {0: 3, 1: 1}, tmp_path / "o2", tmp_path / "c", EvaluateSpec()
        )
    assert "retrieve.per_class" in str(err.value) and "\n" not in str(err.value)


def _recipe(**sections: Any) -> dict[str, Any]:
    return {
        "classes": {"names": ["a", "b"]},
        "real": {"source": "imagefolder", "path": "data"},
        "evaluate": {"train_sets": ["retrieved"]},
        **sections,
    }


@pytest.mark.parametrize(
    ("sections", "fragment"),
    [
        ({}, "add a 'retrieve' section"),
        ({"retrieve": {"pool": "p", "by": "clip"}}, "retrieve.by clip needs retrieve.clip_model"),
        ({"retrieve": {"pool": "p", "by": "caption", "templates": ["x"]}}, "needs '{}'"),
        ({"retrieve": {"pool": "p", "by": "caption"}}, "set retrieve.per_class"),
    ],
)
def test_bad_retrieve_settings_are_one_line_errors(sections: dict, fragment: str) -> None:
    with pytest.raises(SynthsetError) as err:
        recipe_from_dict(_recipe(**sections))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_empty_or_small_pools_are_one_line_errors_on_the_command_line(tmp_path: Path) -> None:
    real = tmp_path / "data"
    for split, values in {"train": (240, 10), "val": (235, 15), "test": (245, 20)}.items():
        for name, v in zip(("a", "b"), values, strict=True):
            for i in range(3):
                (real / split / name).mkdir(parents=True, exist_ok=True)
                _coloured(v + i).save(real / split / name / f"{i}.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "small").mkdir()
    _coloured(100).save(tmp_path / "small" / "0.png")
    recipe = _recipe(
        real={"source": "imagefolder", "path": str(real)},
        retrieve={"pool": str(tmp_path / "empty"), "by": "caption", "per_class": 1},
        output_dir=str(tmp_path / "run"),
    )
    import yaml

    from synthset.pipeline import open_run, stage_retrieve

    for pool, fragment in [
        ("empty", "retrieve.pool: no images in"),
        ("small", "retrieve: 2 images asked but the pool holds 1"),
    ]:
        recipe["retrieve"]["pool"] = str(tmp_path / pool)
        loaded = recipe_from_dict(recipe)
        with pytest.raises(SynthsetError, match=fragment) as err:
            stage_retrieve(loaded, open_run(loaded), progress=False)
        assert "\n" not in str(err.value)
    recipe["retrieve"]["pool"] = str(tmp_path / "missing")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    proc = subprocess.run(
        cli("retrieve", str(tmp_path / "r.yaml"), "--quiet"), capture_output=True, text=True
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "retrieve.pool:" in proc.stderr and "does not exist" in proc.stderr, proc.stderr
