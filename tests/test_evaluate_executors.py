"""The evaluate stage's trainings (train set × seed) through executors, with real processes:
worker processes on this machine and submitit's local executor (Ray: test_scale_out, beside
its loopback cluster). Every runner trains the classifiers one process trains; each finished
training is saved at once, so a killed study — a worker or the driver SIGKILLed — resumes
without redoing what had finished."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from helpers import NAMES, cas_spec, cli, descendants, make_samples, real_splits

from synthset.data.splits import Samples
from synthset.errors import SynthsetError
from synthset.evaluate.cas import run_cas
from synthset.executors.slurm import LOCAL_ENV
from synthset.executors.trainings import build_training_runner
from synthset.recipe import EvaluateSpec

SPEC = {"seeds": [0, 1], "epochs": 4, "train_sets": ["real", "synthetic"]}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Samples], Samples]:
    root = tmp_path_factory.mktemp("study")
    return real_splits(root, train=12, val=6, test=8), make_samples(root / "syn", 12, 3)


def trained(result: dict[str, Any]) -> dict[tuple[str, int], tuple[Any, ...]]:
    """What each training produced, by (train set, seed)."""
    return {
        (name, r["seed"]): (r["test_accuracy"], r["val_loss_history"], r["confusion_matrix"])
        for name, ts in result["train_sets"].items()
        for r in ts["runs"]
    }


def run(
    spec: EvaluateSpec, study: tuple[dict[str, Samples], Samples], out: Path, **kw: Any
) -> dict[str, Any]:
    real, synthetic = study
    return run_cas(spec, real, synthetic, NAMES, out, False, **kw)


@pytest.fixture(scope="module")
def in_process(
    study: tuple[dict[str, Samples], Samples], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    return run(cas_spec(**SPEC), study, tmp_path_factory.mktemp("one") / "eval")


def test_worker_processes_train_what_one_process_trains(
    study: tuple[dict[str, Samples], Samples], in_process: dict[str, Any], tmp_path: Path
) -> None:
    spec = cas_spec(**SPEC, workers=2)
    runner = build_training_runner(spec, None, tmp_path / "slurm")
    result = run(spec, study, tmp_path / "eval", runner=runner)
    assert trained(result) == trained(in_process)
    assert len(list((tmp_path / "eval" / "runs").glob("*.json"))) == 4


def test_a_failing_training_is_one_line_and_finished_ones_are_kept(
    study: tuple[dict[str, Samples], Samples], tmp_path: Path
) -> None:
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    spec = cas_spec(**SPEC, workers=2, classifier_weights=bad)
    runner = build_training_runner(spec, None, tmp_path / "slurm")
    with pytest.raises(SynthsetError, match=r"CAS: 4 of 4 trainings failed \(real seed 0") as err:
        run(spec, study, tmp_path / "eval", runner=runner)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "eval" / "cas.json").exists()


def test_a_rerun_reuses_finished_trainings_and_retrains_changed_ones(
    study: tuple[dict[str, Samples], Samples], in_process: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    epochs: list[tuple[str, int, int]] = []
    run(cas_spec(**SPEC), study, out, on_epoch=lambda s, seed, e, *_: epochs.append((s, seed, e)))
    files = sorted((out / "runs").glob("*.json"))
    before = {p.name: p.stat().st_mtime_ns for p in files}
    files[0].unlink()
    (out / "cas.json").unlink()
    epochs.clear()
    time.sleep(0.01)
    again = run(
        cas_spec(**SPEC), study, out, on_epoch=lambda s, seed, e, *_: epochs.append((s, seed, e))
    )
    after = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    assert after.keys() == before.keys()
    assert [n for n in before if after[n] != before[n]] == [files[0].name]  # only it retrained
    assert trained(again) == trained(in_process)
    assert len(epochs) == 4 * 4  # trackers see every epoch, replayed for the reused trainings

    run(cas_spec(**(SPEC | {"epochs": 3})), study, out)  # a changed setting retrains all
    changed = {p.name for p in (out / "runs").glob("*.json")}
    assert len(changed) == 4 and not changed & before.keys()


def test_slurm_array_through_submitit_trains_what_one_process_trains(
    study: tuple[dict[str, Samples], Samples],
    in_process: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = cas_spec(
        **(SPEC | {"seeds": [0], "train_sets": ["real", "synthetic"]}), executor="slurm"
    )
    monkeypatch.delenv(LOCAL_ENV, raising=False)
    if shutil.which("sbatch") is None:
        runner = build_training_runner(spec, None, tmp_path / "slurm")
        with pytest.raises(SynthsetError, match="evaluate.executor slurm: sbatch is not on PATH"):
            run(spec, study, tmp_path / "refused", runner=runner)
    monkeypatch.setenv(LOCAL_ENV, "1")  # what launch slurm --local sets inside its jobs
    runner = build_training_runner(spec, None, tmp_path / "slurm")
    result = run(spec, study, tmp_path / "eval", runner=runner)
    expected = {k: v for k, v in trained(in_process).items() if k[1] == 0}
    assert trained(result) == expected
    assert len(list((tmp_path / "slurm").glob("*/*_result.pkl"))) == 2  # one array task each


# ----------------------------------------------------------------------------- kills

RECIPE = {
    "name": "eval-workers",
    "seed": 3,
    "classes": {"dataset": "digits"},
    "real": {"source": "digits"},
    "evaluate": {
        "train_sets": ["real"],
        "seeds": [0, 1, 2],
        "epochs": 5,
        "batch_size": 64,
        "device": "cpu",
        "fidelity": {"enabled": False},
    },
    "report": {"enabled": False},
}


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def training_workers(root: int) -> list[psutil.Process]:
    """The spawned training processes under ``root``."""
    return descendants(root, "multiprocessing.spawn")


def cas_runs(out: Path) -> dict[int, tuple[Any, ...]]:
    result = json.loads((out / "evaluate" / "cas.json").read_text())
    return {
        r["seed"]: (r["test_accuracy"], r["val_loss_history"])
        for r in result["train_sets"]["real"]["runs"]
    }


@pytest.mark.slow  # CI time: run with pytest -m slow
def test_killed_training_worker_and_driver_resume_to_one_process_result(tmp_path: Path) -> None:
    """``synthset evaluate`` with two worker processes: one worker SIGKILLed mid-training (the
    pool is rebuilt and retrains it), then the driver SIGKILLed after a training was saved; a
    rerun trains only the unsaved ones and ends where one process ends."""
    from synthset.pipeline import open_run, stage_evaluate
    from synthset.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    ref = tmp_path / "ref"
    one = load_recipe(recipe, output_dir=ref)
    stage_evaluate(one, open_run(one), progress=False)  # in one process

    out = tmp_path / "workers"
    args = cli("evaluate", str(recipe), "--out", str(out), "-q", "--set", "evaluate.workers=2")
    proc = subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    saved = out / "evaluate" / "runs"
    killed_worker = killed_driver = False
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        workers = training_workers(proc.pid)
        if not killed_worker and workers and time.time() - workers[0].create_time() > 1.5:
            workers[0].send_signal(signal.SIGKILL)
            killed_worker = True
        if killed_worker and len(list(saved.glob("*.json"))) >= 1:
            orphans = training_workers(proc.pid)
            proc.send_signal(signal.SIGKILL)
            killed_driver = True
            # the driver's training processes end with it instead of waiting forever
            _, alive = psutil.wait_procs(orphans, timeout=15)
            assert not alive, f"training workers outlived their driver: {alive}"
            break
        time.sleep(0.05)
    proc.wait(timeout=120)
    assert killed_worker, "the study ended before a worker could be killed"
    if killed_driver:
        assert not (out / "evaluate" / "cas.json").exists()
    kept = {p.name: p.stat().st_mtime_ns for p in saved.glob("*.json")}
    done = subprocess.run(args, capture_output=True, text=True, env=env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(p.stat().st_mtime_ns == kept[p.name] for p in saved.glob("*.json") if p.name in kept)
    assert cas_runs(out) == cas_runs(ref)
