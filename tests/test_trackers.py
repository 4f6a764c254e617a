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
