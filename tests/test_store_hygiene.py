"""Store hygiene: ``images/`` holds exactly the current dataset (what the index lists; the rest
moves aside into a dated folder, never deleted), "done" needs the image file, and one run folder
has writers of one shard layout at a time and one ``synthset run`` at a time."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthset.errors import SynthsetError
from synthset.executors.base import finished_ids
from synthset.generators.registry import GENERATORS
from synthset.pipeline import (
    StageLog,
    generation_status,
    open_run,
    run_all,
    stage_generate,
    stage_plan,
)
from synthset.plan import WorkItem
from synthset.recipe import Recipe, recipe_from_dict
from synthset.store.atomic import read_jsonl
from synthset.store.manifest import Manifest

TESTS = Path(__file__).resolve().parent
NAMES = ["ant", "bee", "cat"]


def _raw(out: Path, names: list[str] = NAMES, per_class: int = 4, fmt: str = "png") -> dict:
    """A recipe without real data or adaptation; ``_solid`` swaps in the fake generator."""
    return {
        "output_dir": str(out),
        "classes": {"names": names},
        "generate": {
            "images_per_class": per_class,
            "batch_size": 2,
            "image_format": fmt,
            "generator": {"kind": "tiny", "model": "unused"},
        },
        "report": {"enabled": False},
    }


def _solid(raw: dict) -> Recipe:
    """``raw`` with the solid-colour generator of seam_fakes (its name is not in the Literal)."""
    recipe = recipe_from_dict(raw)
    gen = recipe.generate
    assert gen is not None
    fake = gen.generator.model_copy(update={"kind": "solid", "model": None})
    return recipe.model_copy(update={"generate": gen.model_copy(update={"generator": fake})})


@pytest.fixture
def solid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(GENERATORS.entries, "solid", "seam_fakes:SolidColorGenerator")


def _files(images: Path) -> dict[str, bytes]:
    """Every file under ``images/`` but the index, by relative path."""
    return {
        p.relative_to(images).as_posix(): p.read_bytes()
        for p in sorted(images.rglob("*"))
        if p.is_file() and p.name != "metadata.jsonl"
    }


def _index(images: Path) -> list[str]:
    return [r["file_name"] for r in read_jsonl(images / "metadata.jsonl")]


def _imagefolder_len(images: Path) -> int:
    from torchvision import datasets

    return len(datasets.ImageFolder(str(images)))


# ----------------------------------------------------------------------------- images/ hygiene

CHANGES: dict[str, dict[str, Any]] = {
    "png_to_jpeg": {"fmt": "jpeg"},
    "fewer_images_per_class": {"per_class": 2},
    "fewer_classes": {"names": ["ant", "bee"]},
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_images_hold_exactly_the_current_dataset_and_the_rest_moves_aside(
    tmp_path: Path, solid: None, change: str, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    run = run_all(_solid(_raw(out)), progress=False)
    before = _files(run.images)
    assert len(before) == 12

    caplog.set_level(logging.INFO)
    run_all(_solid(_raw(out, **CHANGES[change])), progress=False)
    now = _files(run.images)
    index = _index(run.images)
    assert sorted(now) == sorted(index)  # exactly the listed files, nothing else
    assert _imagefolder_len(run.images) == len(index) == len(now)
    assert not [d for d in run.images.rglob("*") if d.is_dir() and not any(d.iterdir())]

    stale = set(before) - set(now)
    assert stale
    dated = sorted((out / "stale").iterdir())
    assert len(dated) == 1, "one dated folder per sweep"
    moved = _files(dated[0] / "images")
    assert moved == {rel: before[rel] for rel in stale}  # byte-identical, same relative paths
    lines = [r.getMessage() for r in caplog.records if str(dated[0]) in r.getMessage()]
    assert len(lines) == 1 and f"{len(stale)} " in lines[0] and "\n" not in lines[0]

    again = StageLog()  # an unchanged rerun moves nothing more
    run_all(_solid(_raw(out, **CHANGES[change])), progress=False, log=again)
    assert again.status("generate") == "skipped"
    assert len(list((out / "stale").iterdir())) == 1


def test_a_returning_item_whose_file_is_gone_is_regenerated(tmp_path: Path, solid: None) -> None:
    out = tmp_path / "run"
    full = _solid(_raw(out, per_class=4))
    run = run_all(full, progress=False)
    first = _files(run.images)

    run_all(_solid(_raw(out, per_class=2)), progress=False)  # items 2 and 3 of each class leave
    returning = sorted(set(first) - set(_index(run.images)))
    assert len(returning) == 6
    for rel in returning:  # moved aside by the sweep (or by a user): make sure they are gone
        (run.images / rel).unlink(missing_ok=True)
    rows_before = len(read_jsonl(run.manifest))

    run_all(full, progress=False)  # they come back into the plan: made again, not "done"
    assert _files(run.images) == first  # same bytes as the first time (seeded)
    assert len(read_jsonl(run.manifest)) == rows_before + 6
    assert generation_status(full, run) == (12, 12)

    (run.images / returning[0]).unlink()  # "done" needs the file
    assert generation_status(full, run) == (11, 12)


def test_done_needs_the_file_where_the_plan_puts_it(tmp_path: Path) -> None:
    """A manifest row counts only with its image in ``images/`` at the item's current path (a
    file moved away, or left in a class folder the plan no longer uses, is made again)."""
    items = [WorkItem(f"0000-00000{i}", 0, "ant", "0_ant", "ant", seed=i) for i in range(3)]
    manifest = Manifest(tmp_path / "manifest.jsonl")
    names = ["0_ant/0000-000000.png", "ant/0000-000001.png", "0_ant/0000-000002.png"]
    for item, name in zip(items, names, strict=True):
        manifest.append(
            {"item_id": item.item_id, "seed": item.seed, "prompt": "ant", "config": "c"}
            | {"file_name": name}
        )
    for name in names[:2]:  # the third image is gone, the second is in an old folder
        path = tmp_path / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
    assert finished_ids(manifest, items, "c") == {"0000-000000"}
    assert finished_ids(manifest, items, "c", tmp_path / "elsewhere") == set()


# ----------------------------------------------------------------------------- writers

HOLDER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from seam_fakes import SolidColorGenerator

class Sleepy(SolidColorGenerator):
    def generate(self, items):
        print("generating", flush=True)
        time.sleep(600)
        return super().generate(items)

from synthset.generators.registry import GENERATORS
GENERATORS.entries["solid"] = "__main__:Sleepy"
from synthset.pipeline import open_run, run_all, stage_generate
from synthset.plan import parse_shard
from synthset.recipe import recipe_from_dict

recipe = recipe_from_dict(json.loads(sys.argv[2]))
gen = recipe.generate
fake = gen.generator.model_copy(update={"kind": "solid", "model": None})
recipe = recipe.model_copy(update={"generate": gen.model_copy(update={"generator": fake})})
if sys.argv[3] == "run":
    run_all(recipe, progress=False)
else:
    stage_generate(recipe, open_run(recipe), parse_shard(sys.argv[3]), progress=False)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@contextlib.contextmanager
def _holder(raw: dict, what: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A real process that runs ``what`` (a shard ``i/n`` of generate, or ``run``) with a
    generator that sleeps in its first batch: it holds whatever the pipeline holds mid-run."""
    err = tmp_path / f"holder-{what.replace('/', 'of')}.err"
    with open(err, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(TESTS), json.dumps(raw), what],
            stdout=subprocess.PIPE,
            stderr=fh,
            text=True,
            env=_env(),
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == "generating", err.read_text()[-3000:]
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def _refused(recipe: Recipe, shard: tuple[int, int]) -> str:
    run = open_run(recipe)
    with pytest.raises(SynthsetError) as err:
        stage_generate(recipe, run, shard=shard, progress=False)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_writer_of_another_shard_layout_is_refused_while_a_shard_runs(
    tmp_path: Path, solid: None
) -> None:
    raw = _raw(tmp_path / "run")
    recipe = _solid(raw)
    run = open_run(recipe)
    stage_plan(recipe, run)
    with _holder(raw, "0/2", tmp_path):
        for shard in [(0, 3), (2, 3), (0, 1)]:  # another layout: refused, naming the running one
            message = _refused(recipe, shard)
            assert "--shard 0/2" in message and "2 shards" in message, message
        assert not (run.root / "manifest.jsonl").exists()
        assert not list(run.root.glob("manifest.shard*of3.jsonl"))

        info = stage_generate(recipe, run, shard=(1, 2), progress=False)  # same layout: allowed
        assert (info["generated"], info["complete"]) == (6, False)
        assert "another 'synthset generate' is writing" in _refused(recipe, (0, 2))  # same shard
    rows = [r["item_id"] for f in run.root.glob("manifest*.jsonl") for r in read_jsonl(f)]
    assert len(rows) == len(set(rows)) == 6


def test_a_killed_writer_does_not_block_the_next_one(tmp_path: Path, solid: None) -> None:
    raw = _raw(tmp_path / "run")
    recipe = _solid(raw)
    run = open_run(recipe)
    stage_plan(recipe, run)
    with _holder(raw, "0/2", tmp_path) as holder:
        assert "--shard 0/2" in _refused(recipe, (0, 1))
        holder.send_signal(signal.SIGKILL)  # the kernel drops its locks: nothing is left to block
        holder.wait()
        info = stage_generate(recipe, run, shard=(1, 3), progress=False)
        assert info["generated"] > 0
        info = stage_generate(recipe, run, progress=False)
        assert info["complete"]
    rows = [r["item_id"] for f in run.root.glob("manifest*.jsonl") for r in read_jsonl(f)]
    assert len(rows) == len(set(rows)) == 12
    assert sorted(_files(run.images)) == sorted(_index(run.images))


def test_a_second_synthset_run_on_a_folder_stops_before_any_stage(
    tmp_path: Path, solid: None
) -> None:
    out = tmp_path / "run"
    raw = _raw(out)
    other = tmp_path / "other.yaml"  # another recipe on the same folder (a tiny model to train)
    other.write_text(yaml.safe_dump(_raw(out, per_class=3) | _tiny_adapt()))
    with _holder(raw, "run", tmp_path):
        state = _snapshot(out)
        second = subprocess.run(
            [sys.executable, "-m", "synthset.cli", "run", str(other), "-q"],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=600,
        )
        assert second.returncode != 0
        assert "Traceback" not in second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "another 'synthset run'" in lines[0], second.stderr
        assert _snapshot(out) == state  # nothing written: no recipe, no marker, no model
        assert not (out / "adapt").exists()
    log = StageLog()  # the holder was SIGKILLed on leaving: the folder is free again
    run_all(_solid(raw), progress=False, log=log)
    assert log.status("generate") == "ran"


def _tiny_adapt() -> dict[str, Any]:
    return {
        "real": {"source": "digits"},
        "classes": {"dataset": "digits"},
        "adapt": {"image_size": 8, "channels": [8, 16], "steps": 2, "batch_size": 16},
        "generate": {"images_per_class": 2, "batch_size": 2, "generator": {"kind": "tiny"}},
    }


def _snapshot(root: Path) -> dict[str, bytes]:
    skip = {"locks"}
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not skip & set(p.relative_to(root).parts)
    }


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_rerun_sweeps_what_killed_writers_left(tmp_path: Path) -> None:
    """A kill mid-write leaves ``.<name>.<pid>.<random>.tmp``; the stage that owns the folder
    removes those of dead writers before it runs again, and keeps a live writer's."""
    import time

    from synthset.pipeline import open_run, stage_data
    from synthset.recipe import recipe_from_dict
    from synthset.store.atomic import remove_dead_temp_files

    recipe = recipe_from_dict(
        {
            "output_dir": str(tmp_path / "run"),
            "classes": {"dataset": "digits"},
            "real": {"source": "digits"},
        }
    )
    run = open_run(recipe)
    assert stage_data(recipe, run)
    folder = next((run.real / "train").iterdir())
    dead = folder / f".digit-0001.png.{_dead_pid()}.ab12cd34.tmp"
    live = folder / f".digit-0002.png.{os.getpid()}.ab12cd34.tmp"
    old_style = folder / ".digit-0003.png.q8w7e6r5.tmp"  # no pid: removed once an hour old
    for tmp in (dead, live, old_style):
        tmp.write_bytes(b"partial")
    hour_ago = time.time() - 7200
    os.utime(old_style, (hour_ago, hour_ago))
    run.stage_marker("data").unlink()  # as if the stage had been killed before its marker
    assert stage_data(recipe, run)
    assert not dead.exists() and not old_style.exists() and live.exists()
    # the cache of decoded tensors and evaluate/ are swept the same way by evaluate
    cache = run.cache / "tensors"
    cache.mkdir(parents=True)
    (cache / f".x.npy.{_dead_pid()}.00ff00ff.tmp").write_bytes(b"x" * 100)
    (cache / "x.npy").write_bytes(b"kept")
    assert remove_dead_temp_files(cache) == 1
    assert [p.name for p in cache.iterdir()] == ["x.npy"]
