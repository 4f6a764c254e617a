"""Trackers: JSONL lines read back, TensorBoard events read back, clear errors for missing ones."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from synthset.errors import SynthsetError
from synthset.evaluate.trackers import build_trackers, epoch_logger, safe_config
from synthset.recipe import EvaluateSpec


def test_jsonl_appends_one_flushed_line_per_call(tmp_path: Path) -> None:
    tracker = build_trackers(["jsonl"], tmp_path, {"name": "r"})
    path = tmp_path / "evaluate" / "metrics.jsonl"
    tracker.log({"val_accuracy": 0.5, "val_loss": float("nan")}, 0, "real/seed0")
    # flushed before close: a killed run keeps the line
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first["prefix"] == "real/seed0" and first["step"] == 0
    assert first["metrics"] == {"val_accuracy": 0.5, "val_loss": None}
    hook = epoch_logger(tracker)
    hook("synthetic x2", 3, 1, 0.75, 0.25)
    tracker.close()

    again = build_trackers(["jsonl"], tmp_path, {})  # append-only across invocations
    again.log({"test_accuracy": 0.9}, 7, "real")
    again.close()
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["prefix"] for r in rows] == ["real/seed0", "synthetic x2/seed3", "real"]
    assert rows[1]["step"] == 1 and rows[1]["metrics"] == {"val_accuracy": 0.75, "val_loss": 0.25}
    assert rows[2]["metrics"] == {"test_accuracy": 0.9}
    assert all(isinstance(r["time"], float) for r in rows)


def test_config_drops_secret_looking_keys() -> None:
    cfg = safe_config(
        {"name": "r", "llm": {"api_key": "sk-1", "hf_token": "t", "model": "m"}, "p": Path("x")}
    )
    assert cfg == {"name": "r", "llm.model": "m", "p": "x"}


def test_unknown_or_missing_tracker_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SynthsetError, match="unknown tracker 'neptune'") as err:
        build_trackers(["neptune"], tmp_path, {})
    assert "\n" not in str(err.value)
    for name in ("wandb", "mlflow"):
        if importlib.util.find_spec(name) is None:
            with pytest.raises(SynthsetError, match=f"pip install {name}"):
                build_trackers(["jsonl", name], tmp_path, {})
    assert not (tmp_path / "evaluate" / "metrics.jsonl").exists()  # checked before opening


def test_recipe_field_defaults_to_jsonl() -> None:
    assert EvaluateSpec().trackers == ["jsonl"]
    assert EvaluateSpec(trackers=["jsonl", "tensorboard"]).trackers[1] == "tensorboard"
    with pytest.raises(ValueError):
        EvaluateSpec(trackers=["neptune"])


def test_tensorboard_events_read_back(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is in the test extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = build_trackers(["jsonl", "tensorboard"], tmp_path, {"name": "r", "token": "s3cret"})
    hook = epoch_logger(tracker)
    for epoch, acc in enumerate([0.25, 0.5, 0.625]):
        hook("real", 0, epoch, acc, 1.0 - acc)
    tracker.close()

    acc = EventAccumulator(str(tmp_path / "evaluate" / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("real/seed0/val_accuracy")
    assert [(e.step, e.value) for e in events] == [(0, 0.25), (1, 0.5), (2, 0.625)]
    assert [e.value for e in acc.Scalars("real/seed0/val_loss")] == [0.75, 0.5, 0.375]
    blob = b"".join(p.read_bytes() for p in (tmp_path / "evaluate" / "tensorboard").iterdir())
    assert b"s3cret" not in blob and b"token" not in blob
    lines = (tmp_path / "evaluate" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3  # the fan-out fed both


def _curve(tmp_path: Path, names: list[str]) -> None:
    tracker = build_trackers(names, tmp_path, {"name": "trk", "epochs": 2, "hf_token": "s3cret"})
    hook = epoch_logger(tracker)
    for seed in (0, 1):
        for epoch in range(3):
            hook("real 25%+synthetic", seed, epoch, 0.1 * epoch + seed, 1 - 0.1 * epoch)
    tracker.close()


def _no_secret(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert b"s3cret" not in path.read_bytes(), path


def test_mlflow_store_in_the_run_folder(tmp_path: Path) -> None:
    pytest.importorskip("mlflow", reason="mlflow is optional (pip install mlflow)")
    from mlflow.tracking import MlflowClient

    from synthset.evaluate.trackers import mlflow_uri

    _curve(tmp_path, ["mlflow"])
    client = MlflowClient(tracking_uri=mlflow_uri((tmp_path / "evaluate" / "mlflow").resolve()))
    exp = client.get_experiment_by_name("synthset")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["epochs"] == "2"
    assert "hf_token" not in run.data.params
    history = client.get_metric_history(run.info.run_id, "real 25__synthetic/seed1/val_accuracy")
    assert [(m.step, round(m.value, 6)) for m in history] == [(0, 1.0), (1, 1.1), (2, 1.2)]
    _no_secret(tmp_path)


def test_wandb_offline_run_in_the_run_folder(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb", reason="wandb is optional (pip install wandb)")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    _curve(tmp_path, ["wandb"])
    runs = list((tmp_path / "evaluate" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0
    _no_secret(tmp_path)
