"""Scale-out on existing engines, with real processes: a Ray cluster on 127.0.0.1 (actors and
the driver SIGKILLed at random), submitit's local executor running the SLURM launch (a shard
task SIGKILLed), a full disk mid-run, CUDA out-of-memory halving the batch. Every run ends with
every item recorded once and images byte-identical to one uninterrupted process."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from helpers import cli, descendants, image_bytes, manifest_ids, reference_images, trained_toy

from synthset.errors import SynthsetError
from synthset.store.atomic import read_jsonl

TESTS = Path(__file__).parent

TOY = {
    "name": "scale-toy",
    "seed": 5,
    "classes": {"dataset": "digits"},
    "real": {"source": "digits"},
    "adapt": {"image_size": 8, "channels": [8, 16], "steps": 20, "batch_size": 32},
    "prompts": {"template": "{class}"},
    "generate": {
        "images_per_class": 24,
        "batch_size": 6,
        "writer_threads": 2,
        "generator": {"kind": "tiny", "steps": 25, "scheduler": "ddpm", "guidance_scale": 2.0},
    },
    "report": {"enabled": False},
}
PLANNED = 240


def env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    # the loopback test cluster runs without Ray's token auth (real clusters keep it on)
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": path,
        "RAY_AUTH_MODE": "disabled",
    }


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), capture_output=True, text=True, env=env(), timeout=600)


def run_ok(*args: str) -> str:
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def assert_matches(run: Path, reference: dict[str, bytes]) -> None:
    ids = manifest_ids(run)
    assert len(ids) == len(set(ids)) == PLANNED, "duplicate or missing items in the manifests"
    assert image_bytes(run) == reference
    assert not list((run / "images").rglob("*.tmp")), "temp files left behind"
    assert len(read_jsonl(run / "images" / "metadata.jsonl")) == PLANNED


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A recipe and a run folder with the toy model adapted and the plan written."""
    return trained_toy(tmp_path_factory.mktemp("scale"), TOY, run_ok)


@pytest.fixture(scope="module")
def reference(trained: tuple[Path, Path]) -> dict[str, bytes]:
    return reference_images(*trained, run_ok, PLANNED)


def fresh(base: Path, name: str) -> Path:
    run = base.parent / name
    shutil.copytree(base, run)
    return run


def wait_for_rows(run: Path, more_than: int, proc: subprocess.Popen[bytes], limit: float) -> None:
    deadline = time.time() + limit
    while len(manifest_ids(run)) <= more_than and time.time() < deadline:
        if proc.poll() is not None:
            return
        time.sleep(0.05)


# ----------------------------------------------------------------------------- ray


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head() -> tuple[str, str]:
    """A Ray head node on 127.0.0.1 (two CPUs), stopped after the module: its GCS address and
    its Ray Client address (``ray://``)."""
    ray_cli = str(Path(sys.executable).parent / "ray")
    port, client_port = free_port(), free_port()
    temp = Path(f"/tmp/ray-synthset-{os.getpid()}")  # Ray's socket paths must stay short
    start = [ray_cli, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}"]
    start += ["--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"]
    start += [f"--temp-dir={temp}", f"--ray-client-server-port={client_port}"]
    done = subprocess.run(start, capture_output=True, text=True, env=env(), timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    client = f"ray://127.0.0.1:{client_port}"
    # a first Ray Client connection can fail while the head is still starting on a busy machine
    probe = f"import ray; ray.init({client!r}); ray.shutdown()"
    for _ in range(5):
        joined = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env(), timeout=180
        )
        if joined.returncode == 0:
            break
        time.sleep(5)
    yield f"127.0.0.1:{port}", client
    subprocess.run([ray_cli, "stop", "--force"], capture_output=True, env=env(), timeout=120)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_address(ray_head: tuple[str, str]) -> str:
    return ray_head[0]


def ray_actor_pids() -> list[int]:
    """Processes of the generator actors (Ray titles them after the mapped class)."""
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "BatchWorker" in " ".join(proc.info["cmdline"] or []):
                pids.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return pids


@pytest.mark.slow  # CI time: run with pytest -m slow
def test_ray_actors_and_driver_killed_at_random_match_one_process(
    trained: tuple[Path, Path], reference: dict[str, bytes], ray_address: str
) -> None:
    """Two generator actors on the loopback cluster, one SIGKILLed at random (Ray restarts it
    and reruns its task), then the driver itself: a rerun ends byte-identical."""
    recipe, base = trained
    run = fresh(base, "ray")
    args = ("generate", str(recipe), "--out", str(run), "-q", "--executor", "ray")
    args += ("--set", f"generate.ray.address={ray_address}", "--set", "generate.ray.concurrency=2")
    rng = random.Random()
    proc = subprocess.Popen(
        cli(*args), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    actor_kills = 0
    while actor_kills < 1 and proc.poll() is None:
        wait_for_rows(run, len(manifest_ids(run)), proc, 180)
        time.sleep(rng.uniform(0.0, 0.5))
        pids = ray_actor_pids()
        if pids and proc.poll() is None:
            os.kill(rng.choice(pids), signal.SIGKILL)
            actor_kills += 1
    wait_for_rows(run, len(manifest_ids(run)), proc, 180)
    driver_killed = proc.poll() is None
    if driver_killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=600)
    assert actor_kills == 1, "the run ended before its actor could be killed"
    assert len(manifest_ids(run)) < PLANNED or not driver_killed
    run_ok(*args)
    assert_matches(run, reference)


def test_ray_failing_batch_is_tried_then_reported_and_the_rest_completes(
    tmp_path: Path, ray_head: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that keeps raising is tried max_attempts times in its actor, then reported in
    one line; every other batch is recorded. Ray Client (ray://) cannot run Ray Data: refused
    in one line before any work."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    from seam_fakes import SolidColorGenerator

    from synthset.executors.base import GenerationJob
    from synthset.executors.ray_data import RayExecutor
    from synthset.plan import WorkItem
    from synthset.recipe import GenerateSpec, GeneratorSpec

    plan = [WorkItem(f"i{k:03d}", k % 2, str(k % 2), str(k % 2), "p", k) for k in range(40)]

    class Flaky(SolidColorGenerator):
        def generate(self, items):  # type: ignore[no-untyped-def]
            if any(it.item_id == "i013" for it in items):
                raise ValueError("the model refused prompt 13")
            return super().generate(items)

    ray = {"address": ray_head[1]}
    spec = GenerateSpec(batch_size=5, executor="ray", max_attempts=2, ray=ray)
    job = GenerationJob(
        plan,
        lambda: Flaky(GeneratorSpec(kind="tiny", model=None)),
        spec,
        tmp_path / "images",
        tmp_path / "manifest.jsonl",
        "cfg",
    )
    with pytest.raises(SynthsetError, match=r"Ray Data does not run through Ray Client") as err:
        RayExecutor(spec).run(job, progress=False)
    assert "\n" not in str(err.value) and not manifest_ids(tmp_path)
    spec.ray.address = ray_head[0]
    with pytest.raises(SynthsetError, match=r"1 batch\(es\) failed 2 times.*prompt 13") as err:
        RayExecutor(spec).run(job, progress=False)
    assert "\n" not in str(err.value)
    assert len(manifest_ids(tmp_path)) == 35  # every batch but the failing one


def test_evaluate_trainings_as_ray_tasks_match_one_process(
    tmp_path: Path, ray_head: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluate stage's trainings (2 sets x 2 seeds) as Ray tasks on the loopback cluster,
    joined through Ray Client (ray://), train the classifiers one process trains; each is saved
    as it returns."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    from helpers import NAMES, cas_spec, make_samples, real_splits

    from synthset.evaluate.cas import run_cas
    from synthset.executors.trainings import build_training_runner

    real, synthetic = real_splits(tmp_path, 12, 6, 8), make_samples(tmp_path / "syn", 12, 3)
    base = {"seeds": [0, 1], "epochs": 3, "train_sets": ["real", "synthetic"]}
    one = run_cas(cas_spec(**base), real, synthetic, NAMES, tmp_path / "one", False)
    spec = cas_spec(**base, executor="ray", ray={"address": ray_head[1]})
    runner = build_training_runner(spec, None, tmp_path / "slurm")
    on_ray = run_cas(spec, real, synthetic, NAMES, tmp_path / "ray", False, runner=runner)
    for name in ("real", "synthetic"):
        assert on_ray["train_sets"][name]["runs"] == [
            r | {"seconds": on_ray["train_sets"][name]["runs"][i]["seconds"]}
            for i, r in enumerate(one["train_sets"][name]["runs"])
        ]
    assert len(list((tmp_path / "ray" / "runs").glob("*.json"))) == 4


# ----------------------------------------------------------------------------- slurm


def job_processes(root: int) -> list[psutil.Process]:
    """submitit's job processes below ``root``."""
    return descendants(root, "submitit.core._submit")


@pytest.mark.slow  # CI time: run with pytest -m slow
def test_launch_slurm_local_from_scratch_with_a_killed_shard_task_matches_one_process(
    trained: tuple[Path, Path], reference: dict[str, bytes]
) -> None:
    """From an empty run folder: the prepare job adapts and plans, two array tasks with two
    "GPUs" each share their shard between two processes through a node-local queue, one task
    is SIGKILLed mid-shard, and the sweep finishes its items and runs every stage; the images
    are those of one process."""
    recipe, base = trained
    run = base.parent / "slurm-fresh"
    args = ("launch", "slurm", str(recipe), "--out", str(run), "--local", "--tasks", "2")
    proc = subprocess.Popen(
        cli(*args, "--set", "slurm.gpus_per_task=2"),
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = 0
    deadline = time.time() + 400
    while not killed and time.time() < deadline and proc.poll() is None:
        jobs = job_processes(proc.pid)
        if len(jobs) >= 2 and len(manifest_ids(run)) > 20:
            task = random.choice(jobs)  # SLURM kills a task's every process (its cgroup)
            for victim in [task, *task.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    victim.send_signal(signal.SIGKILL)
            killed += 1
        time.sleep(0.05)
    out, stderr = proc.communicate(timeout=600)
    assert killed == 1, "the shard tasks ended before one could be killed"
    assert proc.returncode == 0, stderr[-3000:]
    assert "launch slurm: done" in out + stderr and "Traceback" not in stderr
    assert "the sweep finished its items" in stderr
    assert list(run.glob("manifest.shard*of2.q*.jsonl")), "the tasks ran no queue workers"
    assert not (run / "queue").exists(), "the queue belongs on node-local disk, not the run"
    launched = yaml.safe_load((run / "slurm" / "launch.json").read_text())
    assert launched["prepare"] and len(launched["shards"]) == 2 and launched["sweep"]
    assert_matches(run, reference)


def test_launch_slurm_without_slurm_is_one_line(trained: tuple[Path, Path]) -> None:
    recipe, base = trained
    run = fresh(base, "no-slurm")
    result = run_cli("launch", "slurm", str(recipe), "--out", str(run))
    assert result.returncode == 2
    assert (
        "sbatch is not on PATH: run it on a SLURM login node" in result.stderr
        and "--local" in result.stderr
    )
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- failures


def test_disk_full_mid_run_is_one_line_and_a_rerun_completes(
    trained: tuple[Path, Path], reference: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write hook raises ENOSPC after 40 images: the CLI prints one line naming the full
    disk, every recorded image is whole, and the rerun finishes byte-identical."""
    from typer.testing import CliRunner

    from synthset.cli import app
    from synthset.executors import local

    recipe, base = trained
    run = fresh(base, "disk-full")
    real_write = local.write_image
    calls = {"n": 0}

    def full_disk(images_dir: Path, relpath: str, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] > 40:
            raise OSError(errno.ENOSPC, "No space left on device", str(images_dir / relpath))
        real_write(images_dir, relpath, data)

    monkeypatch.setattr(local, "write_image", full_disk)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = CliRunner().invoke(app, ["generate", str(recipe), "--out", str(run), "-q"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "the disk is full writing" in lines[0], result.output
    assert "rerunning the command resumes" in lines[0]
    recorded = read_jsonl(run / "manifest.jsonl")
    assert 0 < len(recorded) <= 40
    for row in recorded:  # every finished image stays valid
        assert (run / "images" / row["file_name"]).read_bytes() == reference[row["file_name"]]
    monkeypatch.setattr(local, "write_image", real_write)
    run_ok("generate", str(recipe), "--out", str(run), "-q")
    assert_matches(run, reference)


def test_cuda_out_of_memory_halves_the_batch_and_keeps_every_image(
    trained: tuple[Path, Path], reference: dict[str, bytes]
) -> None:
    """A generator that runs out of GPU memory above two images per call: each batch of six
    is split (6 → 3 → 1 + 2) and every image is the one the full batch makes."""
    import torch

    from synthset.executors.base import GenerationJob
    from synthset.executors.local import LocalExecutor
    from synthset.pipeline import open_run
    from synthset.plan import load_plan
    from synthset.recipe import load_recipe
    from synthset.stages import item_configs, make_generator

    recipe_path, base = trained
    run_dir = fresh(base, "oom")
    recipe = load_recipe(recipe_path, output_dir=run_dir)
    run = open_run(recipe)
    sizes: list[int] = []

    def small_gpu():  # type: ignore[no-untyped-def]
        generator = make_generator(recipe, run)
        generate = generator.generate

        def limited(items):  # type: ignore[no-untyped-def]
            sizes.append(len(items))
            if len(items) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
            return generate(items)

        generator.generate = limited
        return generator

    plan = load_plan(run.plan)[:30]
    spec = recipe.generate
    job = GenerationJob(plan, small_gpu, spec, run.images, run.manifest, item_configs(recipe))
    torch.set_num_threads(1)
    result = LocalExecutor(spec).run(job, progress=False)
    assert result.generated == 30
    assert sizes[:5] == [6, 3, 1, 2, 3]
    made = image_bytes(run_dir)
    assert len(made) == 30
    for name, data in made.items():
        assert data == reference[name], name
