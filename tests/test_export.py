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
