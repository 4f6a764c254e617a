"""One CAS training as a self-contained job: what any executor runs (this process, a worker
process, a Ray task, a SLURM array task), and where its result is kept.

A :class:`TrainingJob` carries its images (train set, real val and test) and settings, so it
runs anywhere it can be unpickled. Its ``key`` hashes everything the result depends on — the
settings and the bytes of every image tensor — so a finished training saved under
``evaluate/runs/<key>.json`` is reused by a rerun only when it would come out the same.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from synthset.devices import cpu_threads, resolve_device
from synthset.evaluate.classifiers import (
    Normalized,
    build_classifier,
    input_statistics,
    load_weights,
)
from synthset.evaluate.probe import Fitted, fit_linear_probe, wise_ft
from synthset.evaluate.tensors import TensorSet
from synthset.evaluate.train import (
    EpochCallback,
    TrainData,
    head,
    predict_logits,
    test_metrics,
    train_classifier,
)
from synthset.recipe import EvaluateSpec
from synthset.store.atomic import atomic_write_json

#: Bumped when a result gains or changes a field, so older saved results are not reused.
RESULT_VERSION = 3

# EvaluateSpec fields that say how or where the study runs, or which sets it has (each job's
# own images are hashed instead), not what one training computes
_NOT_IN_KEY = {
    "executor",
    "workers",
    "ray",
    "fidelity",
    "continual",
    "trackers",
    "seeds",
    "train_sets",
    "synthetic_multipliers",
    "synthetic_counts",
    "real_subsets",
    "synthetic_dir",
    "zero_shot_clip",
    "zero_shot_templates",
}


@dataclass(frozen=True)
class TrainingJob:
    """One seeded training of one study set, with everything it needs."""

    label: str
    seed: int
    spec: EvaluateSpec
    train: TrainData
    val: TensorSet
    test: TensorSet
    num_classes: int
    channels: int
    size: int
    ood: TensorSet | None = None  # an out-of-domain test set (evaluate.ood_test)

    @property
    def name(self) -> str:
        return f"{self.label} seed {self.seed}"

    def key(self, digests: dict[int, str]) -> str:
        """A hash of the settings and the images (``digests``: tensor id → content digest, so a
        set shared by many jobs is hashed once)."""
        sets = [self.train.first, self.train.second, self.val, self.test, self.ood]
        blob = {
            "spec": self.spec.model_dump(mode="json", exclude=_NOT_IN_KEY),
            "seed": self.seed,
            "mix": self.train.real_batch_fraction if self.train.second is not None else None,
            "format": [self.num_classes, self.channels, self.size],
            "data": [None if s is None else _digest(s, digests) for s in sets],
        }
        blob["result_version"] = RESULT_VERSION
        raw = json.dumps(blob, sort_keys=True, default=str).encode()
        return hashlib.sha256(raw).hexdigest()[:20]


def _digest(data: TensorSet, cache: dict[int, str]) -> str:
    if id(data) not in cache:
        h = hashlib.sha256()
        for t in (data.images, data.labels):
            h.update(str((tuple(t.shape), str(t.dtype))).encode())
            h.update(t.contiguous().numpy().tobytes())
        cache[id(data)] = h.hexdigest()
    return cache[id(data)]


def run_training(
    job: TrainingJob, progress: bool = False, on_epoch: EpochCallback | None = None
) -> dict[str, Any]:
    """Train (or fit a probe) with one seed, select on val, then test once. Runs wherever the
    job lands: the device is resolved there (a worker sees its own GPU)."""
    device = resolve_device(job.spec.device)
    start = time.perf_counter()
    with cpu_threads(device, job.size):
        torch.manual_seed(job.seed)
        model = build_classifier(job.spec.classifier, job.num_classes, job.channels, job.size)
        if job.spec.classifier_weights is not None:
            load_weights(model, job.spec.classifier_weights)
        statistics = input_statistics(
            model,
            job.spec.classifier,
            job.spec.input_normalization,
            job.spec.classifier_weights is not None,
        )
        if statistics is not None:
            model = Normalized(model, statistics, job.channels)
        if job.spec.protocol == "linear_probe":
            parts = (job.train.first, job.train.second)
            train = TensorSet.concat([s for s in parts if s is not None])
            fitted = fit_linear_probe(model, train, job.val, job.spec.probe_c, job.seed, device)
        else:
            fitted = _train_network(job, model, device, progress, on_epoch)
        scores = fitted.scores(job.test)
        metrics = test_metrics(scores.argmax(1), job.test.labels, job.num_classes, scores)
        if job.ood is not None:
            ood = fitted.scores(job.ood).argmax(1)
            ood_metrics = test_metrics(ood, job.ood.labels, job.num_classes)
            metrics["ood_test_accuracy"] = ood_metrics["test_accuracy"]
            metrics["ood_test_balanced_accuracy"] = ood_metrics["test_balanced_accuracy"]
    return {
        "seed": job.seed,
        **{k: v for k, v in metrics.items() if "test_" in k},
        "best_val_accuracy": fitted.best_val_accuracy,
        "best_epoch": fitted.best_epoch,
        "val_accuracy_history": fitted.val_history,
        "val_loss_history": fitted.val_loss_history,
        **fitted.extra,
        "per_class_accuracy": metrics["per_class_accuracy"],
        "confusion_matrix": metrics["confusion_matrix"],
        "n_train": len(job.train),
        "seconds": round(time.perf_counter() - start, 3),
    }


def _train_network(
    job: TrainingJob,
    model: torch.nn.Module,
    device: torch.device,
    progress: bool,
    on_epoch: EpochCallback | None,
) -> Fitted:
    """Train every layer (scratch, or finetune: a new head, then optionally WiSE-FT)."""
    pretrained = None
    if job.spec.protocol == "finetune":
        last = head(model)
        if last is not None:
            last.reset_parameters()  # the new classes' head, seeded
        pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    best = train_classifier(
        model,
        job.train,
        job.val,
        spec=job.spec,
        seed=job.seed,
        device=device,
        progress=progress,
        desc=f"CAS {job.name}",
        on_epoch=on_epoch,
    )
    model.load_state_dict(best.state)
    val_accuracy, extra = best.best_val_accuracy, {}
    if pretrained is not None and job.spec.wise_ft_alphas:
        alpha, by_alpha, val_accuracy = wise_ft(
            model, pretrained, best.state, job.spec.wise_ft_alphas, job.val, device
        )
        extra = {"wise_ft_alpha": alpha, "wise_ft_val_accuracy": by_alpha}
    return Fitted(
        lambda data: predict_logits(model, data, device),
        val_accuracy,
        best.best_epoch,
        best.val_history,
        best.val_loss_history,
        extra,
    )


Done = Callable[[TrainingJob, dict[str, Any]], None]


class TrainingRunner(Protocol):
    """Runs jobs somewhere; calls ``done(job, result)`` in this process as each one finishes
    (in any order) and returns one line per job that failed."""

    def __call__(self, jobs: list[TrainingJob], done: Done, progress: bool) -> list[str]: ...


class RunStore:
    """``evaluate/runs/<key>.json``: every finished training, written the moment it ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def load(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(key).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def save(self, key: str, result: dict[str, Any]) -> None:
        atomic_write_json(self._path(key), result)

    def keep_only(self, keys: set[str]) -> None:
        """Drop the results of trainings the study no longer has."""
        for path in self.folder.glob("*.json"):
            if path.stem not in keys:
                path.unlink(missing_ok=True)
