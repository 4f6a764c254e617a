"""Exports read back by their ecosystems' own loaders (webdataset, datasets, torchvision), follow
the curated view, resume after a kill, and refuse bad destinations in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import copy_run, toy_digits
from PIL import Image

from synthset.errors import SynthsetError
from synthset.pipeline import stage_export
from synthset.store.atomic import read_jsonl
from synthset.store.run_folder import RunFolder

FORMATS = ["imagefolder", "webdataset", "hf", "parquet", "stream"]


def export(out: Path, curate: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    sets = f"export={json.dumps({'formats': FORMATS} | spec)}"
    result = stage_export(toy_digits(out, curate, sets), RunFolder(out), progress=False)
    assert result is not None
    return result


def source(out: Path) -> dict[str, dict[str, Any]]:
    """item id → its metadata row, with the image's bytes."""
    rows = read_jsonl(out / "images" / "metadata.jsonl")
    return {
        r["item_id"]: r | {"bytes": (out / "images" / r["file_name"]).read_bytes()} for r in rows
    }


@pytest.fixture(scope="module")
def exported(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = copy_run(generated, tmp_path_factory.mktemp("export"))
    result = export(out, shard_max_count=50)
    assert set(result["formats"]) == set(FORMATS) and result["images"] == 120
    return out


def test_webdataset_shards_read_back_with_webdataset(exported: Path) -> None:
    import webdataset as wds

    src = source(exported)
    shards = sorted((exported / "export" / "webdataset").glob("shard-*.tar"))
    assert len(shards) == 3  # 50 + 50 + 20
    seen = {}
    for sample in wds.WebDataset([str(s) for s in shards], shardshuffle=False):
        key = sample["__key__"]
        meta = json.loads(sample["json"])
        assert sample["png"] == src[key]["bytes"]  # stored bytes, not re-encoded
        assert int(sample["cls"]) == src[key]["label"] == meta["label"]
        assert meta["prompt"] == src[key]["prompt"] and meta["seed"] == src[key]["seed"]
        seen[key] = meta["class_name"]
    assert set(seen) == set(src)


def test_hf_and_parquet_read_back_with_datasets(exported: Path) -> None:
    import numpy as np
    from datasets import load_dataset, load_from_disk

    src = source(exported)
    for ds in (
        load_from_disk(str(exported / "export" / "hf" / "dataset")),
        load_dataset("parquet", data_files=str(exported / "export" / "parquet" / "data.parquet"))[
            "train"
        ],
    ):
        assert len(ds) == 120
        assert ds.features["label"].names == [str(i) for i in range(10)]
        for row in ds.select(range(0, 120, 17)):
            expect = src[row["item_id"]]
            assert row["label"] == expect["label"] and row["seed"] == expect["seed"]
            original = np.asarray(Image.open(exported / "images" / expect["file_name"]))
            assert np.array_equal(np.asarray(row["image"]), original)


def test_imagefolder_reads_back_with_torchvision_and_datasets(exported: Path) -> None:
    from datasets import load_dataset
    from torchvision.datasets import ImageFolder

    root = exported / "export" / "imagefolder"
    tv = ImageFolder(str(root))
    assert len(tv) == 120 and tv.classes == [str(i) for i in range(10)]
    ds = load_dataset("imagefolder", data_dir=str(root), split="train")
    assert sorted(ds["label"]) == sorted(r["label"] for r in source(exported).values())


def test_stream_holds_every_image_once_in_tasks_of_k_classes(exported: Path) -> None:
    data = json.loads((exported / "export" / "stream" / "stream.json").read_text())
    stream = data["stream"]
    assert sorted(e["item_id"] for e in stream) == sorted(source(exported))
    assert [e["time"] for e in stream] == list(range(120))
    assert len(data["tasks"]) == 5 and all(len(t) == 2 for t in data["tasks"])
    assert sorted(data["classes"]) == [str(i) for i in range(10)]
    assert data["classes"] != [str(i) for i in range(10)]  # a seeded shuffle
    for e in stream:  # each entry sits in its class's task, tasks in arrival order
        assert e["klass"] in data["tasks"][e["task"]]
        assert (Path(data["root"]) / e["file_name"]).is_file()
    assert [e["task"] for e in stream] == sorted(e["task"] for e in stream)


def test_export_follows_the_curated_view(generated: Path, tmp_path: Path) -> None:
    out = copy_run(generated, tmp_path)
    curate = {"scorers": ["typicality"], "rules": [{"score": "typicality", "percentile": 50}]}
    result = export(out, curate)
    assert result["images"] == 60
    kept = {r["item_id"] for r in read_jsonl(out / "curate" / "kept.jsonl") if r["kept"]}
    stream = json.loads((out / "export" / "stream" / "stream.json").read_text())["stream"]
    assert {e["item_id"] for e in stream} == kept


def test_a_killed_webdataset_export_resumes_byte_identical(generated: Path, tmp_path: Path) -> None:
    out = copy_run(generated, tmp_path)
    folder = out / "export" / "webdataset"
    export(out, formats=["webdataset"], shard_max_count=25)
    before = {p.name: p.read_bytes() for p in folder.glob("shard-*.tar")}
    assert len(before) == 5
    # what a kill leaves: some shards, a half-written temp file, the marker not complete
    (folder / "shard-000003.tar").unlink()
    (folder / "shard-000004.tar").rename(folder / f".shard-000004.tar.{os.getpid()}.ab12.tmp")
    marker = json.loads((folder / ".synthset-export.json").read_text())
    (folder / ".synthset-export.json").write_text(json.dumps(marker | {"complete": False}))
    (out / "stages" / "export.json").unlink()
    result = export(out, formats=["webdataset"], shard_max_count=25)
    assert result["formats"]["webdataset"]["written_now"] == 2
    after = {p.name: p.read_bytes() for p in folder.glob("shard-*.tar")}
    assert after == before


def test_shards_respect_the_byte_limit(generated: Path, tmp_path: Path) -> None:
    out = copy_run(generated, tmp_path)
    export(out, formats=["webdataset"], shard_max_bytes=40_000)
    shards = list((out / "export" / "webdataset").glob("shard-*.tar"))
    assert len(shards) > 1 and all(s.stat().st_size <= 40_000 for s in shards)


def test_bad_destinations_and_missing_tokens_are_one_line_errors(
    generated: Path, tmp_path: Path
) -> None:
    out = copy_run(generated, tmp_path)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    foreign = tmp_path / "foreign" / "stream"
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("keep me")
    cases = [
        ({"formats": ["stream"], "out_dir": str(a_file)}, "is a file"),
        ({"formats": ["stream"], "out_dir": str(tmp_path / "foreign")}, "was not written by"),
        ({"formats": ["hf"], "push_to_hub": "me/digits", "token_env": "NO_SUCH_TOKEN"}, "NO_SUCH"),
    ]
    for spec, fragment in cases:
        with pytest.raises(SynthsetError) as err:
            export(out, **spec)
        assert fragment in str(err.value) and "\n" not in str(err.value)
    assert (foreign / "mine.txt").read_text() == "keep me"
    with pytest.raises(SynthsetError, match="export.formats"):
        export(out, formats=["tfrecord"])


# ----------------------------------------------------------------------------- memory at scale


WARM_UP, SMALL, LARGE = 10, 50, 500  # images in the runs of a memory test


def working_memory() -> int:
    """Bytes the traced code held at its peak beyond what it left allocated: what it kept in
    memory while it ran (what is left, e.g. a resize of the interpreter's table of interned
    strings, which every new path grows, is not the code's working set)."""
    import tracemalloc

    current, peak = tracemalloc.get_traced_memory()
    return peak - current


def _labeled_set(root: Path, n: int) -> tuple[list[dict[str, Any]], Path]:
    """``n`` 8x8 images in ten classes, their index rows and a labels table (one object per
    image, a 32-point polygon, as the labels stage writes)."""
    from synthset.store.atomic import write_jsonl
    from synthset.store.imagefolder import encode_image

    png = encode_image(Image.new("L", (8, 8), 255), "png")
    polygon = [[1.0 + k % 5, 1.0 + k // 8] for k in range(32)]
    rows, labels = [], []
    for i in range(n):
        c, item_id = i % 10, f"item{i:06d}"
        file_name = f"{c}/{item_id}.png"
        (root / "images" / str(c)).mkdir(parents=True, exist_ok=True)
        (root / "images" / file_name).write_bytes(png)
        meta = {"prompt": f"a handwritten digit {c}", "seed": i, "generator": "tiny"}
        rows.append(
            {"item_id": item_id, "label": c, "file_name": file_name}
            | {"path": str(root / "images" / file_name)}
            | meta
        )
        obj = {"class_id": c, "class_name": str(c), "box": [1, 1, 6, 6], "polygon": polygon}
        labels.append(
            {"item_id": item_id, "file_name": file_name, "label": c, "width": 8, "height": 8}
            | {"objects": [obj | {"area": 25, "score": 0.9}], "mask_file": "", "flags": []}
        )
    write_jsonl(root / "labels" / "labels.jsonl", labels)
    return rows, root / "labels"


def test_exports_stream_memory_does_not_grow_with_the_set(tmp_path: Path) -> None:
    """Ten times the images, (almost) the same peak of Python memory during the export: no
    format holds the labels table, its objects or its output document in memory."""
    import tracemalloc

    from synthset.classes import ClassInfo
    from synthset.export.run import export_all
    from synthset.recipe import ExportSpec

    classes = [ClassInfo(c, str(c), str(c)) for c in range(10)]
    formats = ["imagefolder", "webdataset", "stream", "yolo", "coco"]
    peaks = {}
    for n in (WARM_UP, SMALL, LARGE):  # the warm-up run imports what the export uses
        rows, labels_dir = _labeled_set(tmp_path / f"set{n}", n)
        spec = ExportSpec(formats=formats, out_dir=tmp_path / f"out{n}", shard_max_count=100)
        tracemalloc.start()
        summary = export_all(
            spec,
            rows,
            classes,
            tmp_path / f"set{n}" / "images",
            tmp_path / f"run{n}",
            0,
            False,
            labels_dir=labels_dir,
        )
        peaks[n] = working_memory()
        tracemalloc.stop()
        assert summary["formats"]["coco"]["annotations"] == n
        coco = json.loads((tmp_path / f"out{n}" / "coco" / "annotations.json").read_text())
        assert [im["item_id"] for im in coco["images"]] == [r["item_id"] for r in rows]
        assert (
            len(json.loads((tmp_path / f"out{n}" / "stream" / "stream.json").read_text())["stream"])
            == n
        )
    # 450 more label rows as Python objects alone would take ~1.5 MiB
    assert peaks[LARGE] - peaks[SMALL] < 2**19, peaks


def square_source(spec: Any, class_names: list[str]) -> Any:
    """A label source for the memory test: a 5x5 square of the image's own class."""
    import numpy as np

    from synthset.labels.sources import map_candidates

    def find(root: Path, row: dict[str, Any], size: tuple[int, int]) -> Any:
        ink = np.zeros((8, 8), np.float32)
        ink[1:6, 1:6] = 1.0
        return map_candidates(spec, {int(row["label"]): ink}, 0.35)

    return find


def test_labels_stage_memory_does_not_grow_with_the_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The labels stage writes its table a row at a time: ten times the images, about the same
    peak of Python memory, and the summary still counts every image."""
    import tracemalloc

    from synthset.labels.run import label_all
    from synthset.labels.sources import LABEL_SOURCES
    from synthset.recipe import LabelsSpec

    monkeypatch.setitem(LABEL_SOURCES.entries, "square", "test_export:square_source")
    spec = LabelsSpec.model_construct(**{**LabelsSpec().model_dump(), "method": "square"})
    peaks = {}
    for n in (WARM_UP, SMALL, LARGE):  # the warm-up run imports what the export uses
        rows, _ = _labeled_set(tmp_path / f"set{n}", n)
        out = tmp_path / f"labels{n}"
        tracemalloc.start()
        summary = label_all(spec, rows, [str(c) for c in range(10)], tmp_path, out, False)
        peaks[n] = working_memory()
        tracemalloc.stop()
        assert summary["images"] == summary["objects"] == n
        table = read_jsonl(out / "labels.jsonl")
        assert [r["item_id"] for r in table] == [r["item_id"] for r in rows]
        assert all(r["objects"][0]["box"] == [1, 1, 6, 6] for r in table)
    assert peaks[LARGE] - peaks[SMALL] < 2**19, peaks
