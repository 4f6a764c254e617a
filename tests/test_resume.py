"""Resume: a generate killed with SIGKILL at a random moment and run again finishes the plan with
no duplicate and no missing item, byte-identical to an uninterrupted run; shards change nothing."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import cli, image_bytes, manifest_ids, reference_images, trained_toy

from synthset.errors import SynthsetError
from synthset.store.atomic import read_jsonl

TOY = {
    "name": "resume-toy",
    "seed": 3,
    "classes": {"dataset": "digits"},
    "real": {"source": "digits"},
    "adapt": {"image_size": 8, "channels": [8, 16], "steps": 20, "batch_size": 32},
    "prompts": {"template": "{class}"},
    "generate": {
        "images_per_class": 60,
        "batch_size": 6,
        "writer_threads": 2,
        "generator": {"kind": "tiny", "steps": 12, "scheduler": "ddpm", "guidance_scale": 2.0},
    },
}


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run_ok(*args: str) -> str:
    result = subprocess.run(cli(*args), capture_output=True, text=True, env=env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A recipe and a run folder with the toy model adapted and the plan written."""
    return trained_toy(tmp_path_factory.mktemp("resume"), TOY, run_ok)


@pytest.fixture(scope="module")
def reference(trained: tuple[Path, Path]) -> dict[str, bytes]:
    return reference_images(*trained, run_ok, 600)


def test_sigkill_then_rerun_matches_uninterrupted_run(
    trained: tuple[Path, Path], reference: dict[str, bytes]
) -> None:
    recipe, base = trained
    run = base.parent / "killed"
    shutil.copytree(base, run)
    manifest = run / "manifest.jsonl"
    rng = random.Random()
    kills = 0
    for _ in range(2):  # kill twice at random moments, then let it finish
        before = len(read_jsonl(manifest))
        proc = subprocess.Popen(
            cli("generate", str(recipe), "--out", str(run), "-q"),
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        while len(read_jsonl(manifest)) <= before and time.time() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1, "generation finished before it could be killed: make the toy plan larger"
    assert len({e["item_id"] for e in read_jsonl(manifest)}) < 600
    run_ok("generate", str(recipe), "--out", str(run), "-q")

    entries = read_jsonl(manifest)
    ids = [e["item_id"] for e in entries]
    assert len(ids) == len(set(ids)) == 600, "duplicate or missing items in the manifest"
    assert image_bytes(run) == reference
    assert not list((run / "images").rglob("*.tmp")), "temp files left behind"
    meta = read_jsonl(run / "images" / "metadata.jsonl")
    assert len(meta) == 600


def test_shards_make_the_same_images(
    trained: tuple[Path, Path], reference: dict[str, bytes]
) -> None:
    recipe, base = trained
    run = base.parent / "sharded"
    shutil.copytree(base, run)
    first = run_ok("generate", str(recipe), "--out", str(run), "--shard", "1/3", "-q")
    assert "incomplete" in first
    assert not (run / "images" / "metadata.jsonl").exists()
    others = [  # the other two at once, as on two GPUs
        subprocess.Popen(
            cli("generate", str(recipe), "--out", str(run), "--shard", shard, "-q"),
            env=env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for shard in ("0/3", "2/3")
    ]
    for proc in others:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    shard_files = sorted(p.name for p in run.glob("manifest*.jsonl"))
    assert shard_files == [f"manifest.shard{i}of3.jsonl" for i in range(3)]
    assert image_bytes(run) == reference
    assert len(read_jsonl(run / "images" / "metadata.jsonl")) == 600


def test_rerun_of_finished_plan_does_nothing(
    trained: tuple[Path, Path], reference: dict[str, bytes]
) -> None:
    recipe, base = trained
    ref = base.parent / "reference"
    before = (ref / "manifest.jsonl").read_bytes()
    out = run_ok("generate", str(recipe), "--out", str(ref), "-q")
    assert "0 new, 600 already done" in out
    assert (ref / "manifest.jsonl").read_bytes() == before


def test_changed_sampling_settings_regenerate(
    trained: tuple[Path, Path], reference: dict[str, bytes]
) -> None:
    recipe, base = trained
    run = base.parent / "changed"
    shutil.copytree(base.parent / "reference", run)
    out = run_ok(
        "generate", str(recipe), "--out", str(run), "-q", "--set", "generate.generator.steps=5"
    )
    assert "600 new" in out
    assert image_bytes(run) != reference


HOLD_LOCK = """
import sys, time
from pathlib import Path
from synthset.store.locks import writer_lease
from synthset.store.manifest import Manifest
run = Path(sys.argv[1])
with writer_lease(run, (0, 1)), Manifest(run / "manifest.jsonl").exclusive():
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow  # CI time: run with pytest -m slow
def test_a_second_writer_of_the_same_shard_is_refused_until_the_first_dies(
    trained: tuple[Path, Path], reference: dict[str, bytes]
) -> None:
    """Another process holds the run's locks as an unsharded generate does: generate refuses
    with one line and writes nothing, and so does a shard of another layout; once the holder is
    SIGKILLed, the kernel has released the locks and generate finishes the plan."""
    recipe, base = trained
    run = base.parent / "locked"
    shutil.copytree(base, run)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)],
        stdout=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        refused = subprocess.run(
            cli("generate", str(recipe), "--out", str(run), "-q"),
            capture_output=True,
            text=True,
            env=env(),
            timeout=600,
        )
        assert refused.returncode != 0
        assert "another 'synthset generate' is writing" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert not (run / "manifest.jsonl").exists() and not image_bytes(run)
        other = subprocess.run(
            cli("generate", str(recipe), "--out", str(run), "--shard", "0/3", "-q"),
            capture_output=True,
            text=True,
            env=env(),
            timeout=600,
        )
        assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1
        assert "layout" in other.stderr and not (run / "manifest.shard0of3.jsonl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    run_ok("generate", str(recipe), "--out", str(run), "-q")
    assert image_bytes(run) == reference


# ----------------------------------------------------------------------------- the queue executor


@pytest.mark.slow  # CI time: run with pytest -m slow
def test_queue_workers_killed_at_random_match_one_process(
    trained: tuple[Path, Path], reference: dict[str, bytes]
) -> None:
    """Four queue workers on one run folder, SIGKILLed at random and replaced: the run ends
    with every item recorded once, byte-identical to one uninterrupted process."""
    recipe, base = trained
    run = base.parent / "queued"
    shutil.copytree(base, run)
    args = ("generate", str(recipe), "--out", str(run), "-q", "--executor", "queue")
    args += ("--set", "generate.lease_seconds=2")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            cli(*args), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    rng = random.Random()
    workers = [start() for _ in range(4)]
    kills = 0
    deadline = time.time() + 180
    while kills < 5 and time.time() < deadline:
        time.sleep(rng.uniform(1.0, 3.0))
        alive = [p for p in workers if p.poll() is None]
        if not alive:
            break
        victim = rng.choice(alive)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        kills += 1
        workers.append(start())
    for p in workers:
        p.wait(timeout=300)
    assert kills >= 3, "the queue finished before it could be killed: make the toy plan larger"
    run_ok(*args)  # whatever the kills left (nothing, if the survivors took it over)
    ids = manifest_ids(run)
    assert len(ids) == len(set(ids)) == 600, "duplicate or missing items in the manifests"
    assert image_bytes(run) == reference
    assert len(read_jsonl(run / "images" / "metadata.jsonl")) == 600


@pytest.mark.slow  # CI time: run with pytest -m slow
def test_queue_workers_option_starts_helper_processes(
    trained: tuple[Path, Path], reference: dict[str, bytes]
) -> None:
    recipe, base = trained
    run = base.parent / "workers"
    shutil.copytree(base, run)
    out = run_ok(
        "generate", str(recipe), "--out", str(run), "--executor", "queue", "--workers", "2"
    )
    ids = manifest_ids(run)
    assert len(ids) == len(set(ids)) == 600
    assert image_bytes(run) == reference
    assert len(list(run.glob("manifest.shard0of1.q*.jsonl"))) >= 1
    assert "Traceback" not in out
    status = subprocess.run(
        cli("status", str(recipe), "--out", str(run)),
        capture_output=True,
        text=True,
        env={**env(), "COLUMNS": "200"},
    )
    assert "batches: 100 done, 0 leased, 0 failed, 0 left" in status.stdout, status.stdout
    assert "img/s, ETA 0s" in status.stdout and "queue workers" in status.stdout


def test_a_failing_batch_is_set_aside_and_retried(tmp_path: Path) -> None:
    """In process, with a generator that raises on one batch: the rest completes, the run
    stops with a one-line error naming --retry-failed, and a retry finishes it."""
    from seam_fakes import SolidColorGenerator

    from synthset.executors.base import GenerationJob
    from synthset.executors.queue import retry_failed, run_queue_worker
    from synthset.plan import WorkItem
    from synthset.recipe import GenerateSpec, GeneratorSpec

    plan = [WorkItem(f"i{k:03d}", k % 2, str(k % 2), str(k % 2), "p", k) for k in range(40)]

    class Flaky(SolidColorGenerator):
        broken = True

        def generate(self, items):  # type: ignore[no-untyped-def]
            if self.broken and any(it.item_id == "i013" for it in items):
                raise ValueError("the model refused prompt 13")
            return super().generate(items)

    spec = GenerateSpec(batch_size=5, executor="queue", max_attempts=2)
    gen = Flaky(GeneratorSpec(kind="tiny", model=None))
    job = GenerationJob(
        plan, lambda: gen, spec, tmp_path / "images", tmp_path / "manifest.jsonl", "cfg"
    )
    with pytest.raises(SynthsetError, match=r"1 batch\(es\) failed 2 times.*--retry-failed"):
        run_queue_worker(job, progress=False)
    assert len(manifest_ids(tmp_path)) == 35  # every batch but the failing one
    assert retry_failed(tmp_path, (0, 1), spec) == 1
    gen.broken = False
    result = run_queue_worker(job, progress=False)
    assert result.generated == 5 and result.skipped == 35
    ids = manifest_ids(tmp_path)
    assert sorted(ids) == [it.item_id for it in plan]
