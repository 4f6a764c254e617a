"""Classification Accuracy Score: train a classifier on real / synthetic / mixed images and test
it on held-out real images.

Per train set and seed: train with AdamW and a cosine schedule, measure the real **val** split
after every epoch, keep the weights with the best val accuracy, and only then touch the real
**test** split, exactly once. Model selection never sees the test split. The training itself is
:func:`synthset.evaluate.train.train_classifier`.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from synthset.data.splits import Samples
from synthset.devices import resolve_device
from synthset.errors import SynthsetError
from synthset.evaluate.classifiers import build_classifier
from synthset.evaluate.jobs import RunStore, TrainingJob, TrainingRunner, run_training
from synthset.evaluate.studies import (
    TrainSetSpec,
    check_every_class,
    real_subset,
    study_sets,
    synthetic_count_subset,
    synthetic_subset,
)
from synthset.evaluate.tensors import TensorSet, check_labels, infer_format, load_tensors
from synthset.evaluate.train import TrainData
from synthset.recipe import EvaluateSpec
from synthset.store.atomic import atomic_write_json, atomic_write_text


def _summary(
    runs: list[dict[str, Any]], train_set: TrainSetSpec, data: TrainData
) -> dict[str, Any]:
    test = np.array([r["test_accuracy"] for r in runs])
    val = np.array([r["best_val_accuracy"] for r in runs])
    per_class = np.array(
        [[np.nan if a is None else a for a in r["per_class_accuracy"]] for r in runs], dtype=float
    )
    with np.errstate(all="ignore"):
        class_mean = np.nanmean(per_class, axis=0) if len(runs) else per_class
    n_first = len(data.first) if data.second is not None or not train_set.uses_synthetic else 0
    n_real = n_first if train_set.uses_real else 0
    n_retrieved = n_first if train_set.uses_retrieved else 0
    extra = {}
    for metric in (
        "test_balanced_accuracy",
        "test_top5_accuracy",
        "ood_test_accuracy",
        "ood_test_balanced_accuracy",
    ):
        values = np.array([r[metric] for r in runs if metric in r])
        if len(values):
            extra[f"{metric}_mean"] = float(values.mean())
            extra[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {
        "test_accuracy_mean": float(test.mean()),
        "test_accuracy_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
        **extra,
        "best_val_accuracy_mean": float(val.mean()),
        "n_train": runs[0]["n_train"],
        "n_seeds": len(runs),
        "kind": train_set.kind,
        "n_real": n_real,
        "n_retrieved": n_retrieved,
        "n_synthetic": len(data) - n_first,
        "real_subset": train_set.real_subset,
        "synthetic_multiplier": train_set.synthetic_multiplier,
        "synthetic_per_class": train_set.synthetic_count,
        "real_batch_fraction": train_set.real_batch_fraction,
        "per_class_accuracy_mean": [None if np.isnan(a) else float(a) for a in class_mean],
        "confusion_matrix": np.sum([r["confusion_matrix"] for r in runs], axis=0).tolist(),
    }


# what a study set's part is missing, and how to fix a class without images in it
_PART_HINTS = {
    "real train": ("real train images", "add real images of it or drop the class"),
    "retrieved": (
        "retrieved images (retrieve/retrieved.jsonl is empty)",
        "add images of it to retrieve.pool or raise retrieve.per_class",
    ),
    "synthetic": ("", "generate images for it (check generate.images_per_class)"),
}


class StudySets:
    """Decodes each image set at most once, checks its labels, and assembles study sets."""

    def __init__(
        self,
        real: dict[str, Samples],
        synthetic: Samples,
        size: int,
        channels: int,
        class_names: list[str],
        cache_dir: Path | None = None,
        uncurated: Samples | None = None,
        retrieved: Samples | None = None,
    ) -> None:
        self.sources = {f"real {k}": v for k, v in real.items()} | {"synthetic": synthetic}
        self.sources["uncurated"] = uncurated or []
        self.sources["retrieved"] = retrieved or []
        self.size, self.channels, self.class_names = size, channels, class_names
        self.cache: dict[str, TensorSet] = {}
        self.cache_dir = cache_dir

    def __call__(self, name: str) -> TensorSet:
        if name not in self.cache:
            samples = self.sources.get(name) or []
            if not samples:
                raise SynthsetError(f"CAS: the {name} image set is empty")
            data = load_tensors(samples, self.size, self.channels, name, self.cache_dir)
            check_labels(data, len(self.class_names), name)
            self.cache[name] = data
        return self.cache[name]

    def _part(self, name: str, label: str) -> TensorSet:
        what, fix = _PART_HINTS.get(name, _PART_HINTS["synthetic"])
        if not self.sources.get(name):
            what = what or f"{name} synthetic images"
            raise SynthsetError(f"CAS train set {label!r} has no data: there are no {what}")
        data = self(name)
        check_every_class(data, self.class_names, f"CAS {name} set", fix)
        return data

    def train_data(self, train_set: TrainSetSpec) -> TrainData:
        """The images of one study set."""
        k = len(self.class_names)
        needs_real = train_set.uses_real or train_set.synthetic_multiplier is not None
        real = self._part("real train", train_set.label) if needs_real else None
        if real is not None and train_set.real_subset is not None:
            real = real_subset(real, train_set.real_subset, k)
        if train_set.uses_retrieved:  # retrieved stands where real would: first, or alone
            real = self._part("retrieved", train_set.label)
        syn = (
            self._part(train_set.synthetic_source, train_set.label)
            if train_set.uses_synthetic
            else None
        )
        if syn is not None and train_set.synthetic_multiplier is not None:
            assert real is not None
            syn = synthetic_subset(syn, real, train_set.synthetic_multiplier, k)
        if syn is not None and train_set.synthetic_count is not None:
            syn = synthetic_count_subset(syn, train_set.synthetic_count, self.class_names)
        if not train_set.uses_synthetic:
            assert real is not None
            return TrainData(real)
        if not (train_set.uses_real or train_set.uses_retrieved):
            assert syn is not None
            return TrainData(syn)
        assert real is not None and syn is not None
        return TrainData(real, syn, train_set.real_batch_fraction, train_set.mixed_epoch)


def run_cas(
    spec: EvaluateSpec,
    real: dict[str, Samples],
    synthetic: Samples,
    class_names: list[str],
    out_dir: Path,
    progress: bool = True,
    on_epoch: Callable[[str, int, int, float, float], None] | None = None,
    cache_dir: Path | None = None,
    uncurated: Samples | None = None,
    runner: TrainingRunner | None = None,
    ood: Samples | None = None,
    retrieved: Samples | None = None,
) -> dict[str, Any]:
    """Train on every set of the study for each seed, test on ``real['test']``; write
    ``out_dir/cas.json`` and ``out_dir/cas.csv`` and return the result dict.

    ``on_epoch(train_set, seed, epoch, val_accuracy, val_loss)`` sees every epoch (trackers);
    ``cache_dir`` keeps decoded images as memory-mapped files for later runs; ``uncurated``:
    every generated image, for the ``uncurated`` train set; ``runner``: where the trainings
    run (default: here, one after another). Each finished training is saved under
    ``out_dir/runs`` at once; a rerun reuses those whose settings and images are unchanged.
    ``ood``: an out-of-domain test set (same classes), measured once per run beside test;
    ``retrieved``: real images retrieved from a pool, for the ``retrieved`` train sets."""
    num_classes = len(class_names)
    if num_classes < 2:
        raise SynthsetError(f"CAS needs at least 2 classes (got {num_classes})")
    for split in ("val", "test"):
        if not real.get(split):
            raise SynthsetError(
                f"CAS: the real {split} split is empty; add real {split} images or set "
                f"real.{split}_fraction > 0"
            )
    reference = real.get("train") or real["val"]
    size, channels = infer_format(reference, "real train")
    size, channels = spec.image_size or size, spec.channels or channels
    device = resolve_device(spec.device)
    sets = StudySets(
        real, synthetic, size, channels, list(class_names), cache_dir, uncurated, retrieved
    )
    val, test = sets("real val"), sets("real test")
    ood_set = None
    if ood:
        ood_set = load_tensors(ood, size, channels, "out-of-domain test", cache_dir)
        check_labels(ood_set, num_classes, "out-of-domain test")
    build_classifier(spec.classifier, num_classes, channels, size)  # fail fast on a bad name
    study = study_sets(spec)
    train_data = {ts.label: sets.train_data(ts) for ts in study}  # fail fast on bad data

    shape = (num_classes, channels, size)
    jobs = [
        TrainingJob(ts.label, seed, spec, train_data[ts.label], val, test, *shape, ood=ood_set)
        for ts in study
        for seed in spec.seeds
    ]
    runs = _run_jobs(jobs, RunStore(Path(out_dir) / "runs"), runner, progress, on_epoch)
    results: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for train_set in study:
        mine = [runs[i] for i, job in enumerate(jobs) if job.label == train_set.label]
        rows += [
            {"train_set": train_set.label} | {k: r.get(k, "") for k in _CSV_FIELDS[1:]}
            for r in mine
        ]
        train = train_data[train_set.label]
        results[train_set.label] = {"runs": mine, "summary": _summary(mine, train_set, train)}

    result = {
        "config": {
            "classifier": spec.classifier,
            "classifier_weights": str(spec.classifier_weights) if spec.classifier_weights else None,
            "optimizer": spec.optimizer,
            "image_size": size,
            "channels": channels,
            "epochs": spec.epochs,
            "batch_size": spec.batch_size,
            "lr": spec.lr,
            "weight_decay": spec.weight_decay,
            "augment": spec.augment,
            "real_batch_fraction": spec.real_batch_fraction,
            "ema_epochs": spec.ema_epochs,
            "seeds": list(spec.seeds),
            "device": str(device),
            "class_names": list(class_names),
            "n_val": len(val),
            "n_test": len(test),
            "n_ood_test": len(ood_set) if ood_set is not None else None,
        },
        "train_sets": results,
    }
    if spec.zero_shot_clip is not None:
        from synthset.evaluate.zero_shot import cached_zero_shot

        result["zero_shot"] = cached_zero_shot(
            spec, real["test"], list(class_names), device, Path(out_dir), ood
        )
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "cas.json", result)
    atomic_write_text(out_dir / "cas.csv", _csv(rows))
    return result


def _run_jobs(
    jobs: list[TrainingJob],
    store: RunStore,
    runner: TrainingRunner | None,
    progress: bool,
    on_epoch: Callable[[str, int, int, float, float], None] | None,
) -> list[dict[str, Any]]:
    """Every job's result, in job order: saved ones reused, the rest run by ``runner`` (or here,
    one after another, with live epoch callbacks), each saved the moment it ends. Epochs of
    trainings not run here are replayed to ``on_epoch`` from their histories."""
    digests: dict[int, str] = {}
    keys = [job.key(digests) for job in jobs]
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for job, key in zip(jobs, keys, strict=True):
        saved = store.load(key)
        if saved is None:
            todo.append(job)
        else:
            results[key] = saved
    key_of = {(job.label, job.seed): key for job, key in zip(jobs, keys, strict=True)}
    live: set[str] = set()

    def done(job: TrainingJob, result: dict[str, Any]) -> None:
        store.save(key_of[job.label, job.seed], result)
        results[key_of[job.label, job.seed]] = result

    failures: list[str] = []
    if runner is None:
        for job in todo:
            hook = functools.partial(on_epoch, job.label, job.seed) if on_epoch else None
            done(job, run_training(job, progress, hook))
            live.add(key_of[job.label, job.seed])
    elif todo:
        failures = runner(todo, done, progress)
    if failures:
        raise SynthsetError(
            f"CAS: {len(failures)} of {len(jobs)} trainings failed ({failures[0]}); the "
            f"{len(results)} finished ones are saved: rerun to retry the rest"
        )
    if on_epoch is not None:
        for job, key in zip(jobs, keys, strict=True):
            if key in live:
                continue
            run = results[key]
            history = zip(run["val_accuracy_history"], run["val_loss_history"], strict=True)
            for epoch, (acc, loss) in enumerate(history):
                on_epoch(job.label, job.seed, epoch, acc, loss)
    store.keep_only(set(keys))
    return [results[key] for key in keys]


_CSV_FIELDS = [
    "train_set",
    "seed",
    "test_accuracy",
    "test_balanced_accuracy",
    "test_top5_accuracy",
    "ood_test_accuracy",
    "best_val_accuracy",
    "n_train",
]


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
