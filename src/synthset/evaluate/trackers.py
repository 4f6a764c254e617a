"""Experiment trackers for training curves: JSONL (always available), TensorBoard, W&B (offline)
and MLflow (a file store inside the run folder), behind one fan-out ``Tracker``.

``build_trackers(["jsonl", "tensorboard"], run.root, config)`` returns a tracker whose
``log(metrics, step, prefix)`` goes to every backend; ``epoch_logger(tracker)`` adapts it to the
``on_epoch(train_set, seed, epoch, val_accuracy, val_loss)`` hook of ``run_cas``."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from synthset.errors import SynthsetError

TRACKERS = ("jsonl", "tensorboard", "wandb", "mlflow")
# tracker name -> (module that must import, pip package to install)
REQUIRES = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}
SECRET = re.compile(r"token|secret|password|passwd|api_?key|credential|auth", re.IGNORECASE)


class Tracker(Protocol):
    """Where per-step metrics go."""

    def log(self, metrics: dict[str, float], step: int, prefix: str) -> None: ...

    def close(self) -> None: ...


def safe_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` flattened to ``a.b`` keys with JSON-able values, secret-looking keys dropped."""
    out: dict[str, Any] = {}

    def walk(value: Any, key: str) -> None:
        if key and SECRET.search(key.rsplit(".", 1)[-1]):
            return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            out[key] = str(value)

    walk(config, "")
    return out


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """Floats, with NaN/inf as None (JSON has no NaN)."""
    out: dict[str, float | None] = {}
    for k, v in metrics.items():
        f = float(v)
        out[str(k)] = f if math.isfinite(f) else None
    return out


class JsonlTracker:
    """``evaluate/metrics.jsonl``: one ``{"time", "prefix", "step", "metrics"}`` object per call,
    appended and flushed line by line, so a killed run keeps every finished line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8")

    def log(self, metrics: dict[str, float], step: int, prefix: str) -> None:
        row = {"time": time.time(), "prefix": prefix, "step": int(step)}
        row["metrics"] = _finite(metrics)
        self._file.write(json.dumps(row, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardTracker:
    """Scalars ``<prefix>/<metric>`` in ``evaluate/tensorboard/``; the config as a text summary."""

    def __init__(self, log_dir: Path, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))
        if config:
            table = "\n".join(f"| {k} | {v} |" for k, v in sorted(config.items()))
            self.writer.add_text("config", "| key | value |\n|---|---|\n" + table, 0)

    def log(self, metrics: dict[str, float], step: int, prefix: str) -> None:
        for key, value in _finite(metrics).items():
            if value is not None:
                self.writer.add_scalar(f"{prefix}/{key}", value, int(step))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A W&B run in offline mode in ``evaluate/wandb/`` (``wandb sync`` uploads it later).
    Each prefix gets its own step axis (``<prefix>/step``), since W&B's global step must only grow
    while every train set and seed restarts at epoch 0."""

    def __init__(self, root: Path, name: str, config: dict[str, Any]) -> None:
        import wandb

        os.environ["WANDB_MODE"] = "offline"
        root.mkdir(parents=True, exist_ok=True)
        self.wandb = wandb
        self.run = wandb.init(
            project="synthset",
            name=name,
            dir=str(root),  # wandb adds its own "wandb/" folder below
            mode="offline",
            config=config,
            settings=wandb.Settings(silent=True),
        )
        self._prefixes: set[str] = set()

    def log(self, metrics: dict[str, float], step: int, prefix: str) -> None:
        if prefix not in self._prefixes:
            self.run.define_metric(f"{prefix}/step")
            self.run.define_metric(f"{prefix}/*", step_metric=f"{prefix}/step")
            self._prefixes.add(prefix)
        row = {f"{prefix}/{k}": v for k, v in _finite(metrics).items() if v is not None}
        self.run.log(row | {f"{prefix}/step": int(step)})

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    """An MLflow run stored inside the run folder: SQLite ``evaluate/mlflow/mlflow.db`` when
    SQLAlchemy is installed (``mlflow ui --backend-store-uri sqlite:///...``), else a file store
    ``evaluate/mlflow/mlruns``; through an ``MlflowClient``, so no global tracking URI changes."""

    def __init__(self, root: Path, name: str, config: dict[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        root = root.resolve()
        root.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=mlflow_uri(root))
        exp = self.client.get_experiment_by_name("synthset")
        exp_id = (
            exp.experiment_id
            if exp
            else self.client.create_experiment(
                "synthset", artifact_location=(root / "artifacts").as_uri()
            )
        )
        self.run_id = self.client.create_run(exp_id, run_name=name).info.run_id
        for key, value in config.items():
            self.client.log_param(self.run_id, _mlflow_key(key), str(value)[:500])

    def log(self, metrics: dict[str, float], step: int, prefix: str) -> None:
        for key, value in _finite(metrics).items():
            if value is not None:
                name = _mlflow_key(f"{prefix}/{key}")
                self.client.log_metric(self.run_id, name, value, step=int(step))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def mlflow_uri(root: Path) -> str:
    """The tracking URI of the MLflow store below ``root`` (SQLite when SQLAlchemy is there; the
    plain file store, which recent MLflow only opens on request, otherwise)."""
    if importlib.util.find_spec("sqlalchemy") and importlib.util.find_spec("alembic"):
        return f"sqlite:///{root / 'mlflow.db'}"
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (root / "mlruns").as_uri()


def _mlflow_key(key: str) -> str:
    """MLflow names allow letters, digits, ``_ - . / space``; anything else becomes ``_``."""
    return re.sub(r"[^\w\-. /]", "_", key)


class FanOut:
    """Sends every call to each tracker; ``close`` closes all of them even if one fails."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def log(self, metrics: dict[str, float], step: int, prefix: str) -> None:
        for tracker in self.trackers:
            tracker.log(metrics, step, prefix)

    def close(self) -> None:
        errors = []
        for tracker in self.trackers:
            try:
                tracker.close()
            except Exception as exc:  # close the others first, then report
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> FanOut:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_installed(names: list[str]) -> None:
    """One-line ``SynthsetError`` for the first tracker whose package is missing."""
    for name in names:
        if name not in TRACKERS:
            raise SynthsetError(
                f"evaluate.trackers: unknown tracker {name!r}; choose from {', '.join(TRACKERS)}"
            )
        if name in REQUIRES:
            module, package = REQUIRES[name]
            if importlib.util.find_spec(module) is None:
                raise SynthsetError(
                    f"evaluate.trackers: {name!r} needs the {package} package; "
                    f"run `pip install {package}` or remove {name!r} from evaluate.trackers"
                )


def build_trackers(names: list[str], run_dir: Path, config: dict[str, Any]) -> FanOut:
    """The trackers ``names`` (recipe ``evaluate.trackers``) writing below ``run_dir/evaluate``;
    ``config`` (e.g. the resolved recipe) is recorded where the backend supports it, without
    secret-looking keys."""
    check_installed(names)
    out_dir = Path(run_dir) / "evaluate"
    cfg = safe_config(config)
    name = str(cfg.get("name", Path(run_dir).name))
    trackers: list[Tracker] = []
    try:
        for tracker in dict.fromkeys(names):  # each once, in the given order
            if tracker == "jsonl":
                trackers.append(JsonlTracker(out_dir / "metrics.jsonl"))
            elif tracker == "tensorboard":
                trackers.append(TensorBoardTracker(out_dir / "tensorboard", cfg))
            elif tracker == "wandb":
                trackers.append(WandbTracker(out_dir, name, cfg))
            elif tracker == "mlflow":
                trackers.append(MlflowTracker(out_dir / "mlflow", name, cfg))
    except BaseException:
        FanOut(trackers).close()
        raise
    return FanOut(trackers)


def epoch_logger(tracker: Tracker) -> Callable[[str, int, int, float, float], None]:
    """An ``on_epoch(train_set, seed, epoch, val_accuracy, val_loss)`` hook for ``run_cas`` that
    logs ``val_accuracy`` and ``val_loss`` under the prefix ``<train_set>/seed<seed>``."""

    def on_epoch(train_set: str, seed: int, epoch: int, val_acc: float, val_loss: float) -> None:
        tracker.log(
            {"val_accuracy": val_acc, "val_loss": val_loss}, epoch, f"{train_set}/seed{seed}"
        )

    return on_epoch
