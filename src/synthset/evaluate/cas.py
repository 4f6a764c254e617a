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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthset.data.splits import Samples
from synthset.devices import cpu_threads, resolve_device
from synthset.errors import SynthsetError
from synthset.evaluate.classifiers import build_classifier, load_weights
from synthset.evaluate.studies import (
    TrainSetSpec,
    check_every_class,
    real_subset,
    study_sets,
    synthetic_subset,
)
from synthset.evaluate.tensors import TensorSet, check_labels, infer_format, load_tensors
from synthset.evaluate.train import (
    EpochCallback,
    TrainData,
    predict,
    test_metrics,
    train_classifier,
)
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
    n_real = len(data.first) if train_set.uses_real else 0
    return {
        "test_accuracy_mean": float(test.mean()),
        "test_accuracy_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
        "best_val_accuracy_mean": float(val.mean()),
        "n_train": runs[0]["n_train"],
        "n_seeds": len(runs),
        "kind": train_set.kind,
        "n_real": n_real,
        "n_synthetic": len(data) - n_real,
        "real_subset": train_set.real_subset,
        "synthetic_multiplier": train_set.synthetic_multiplier,
        "real_batch_fraction": train_set.real_batch_fraction,
        "per_class_accuracy_mean": [None if np.isnan(a) else float(a) for a in class_mean],
        "confusion_matrix": np.sum([r["confusion_matrix"] for r in runs], axis=0).tolist(),
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
    ) -> None:
        self.sources = {f"real {k}": v for k, v in real.items()} | {"synthetic": synthetic}
        self.sources["uncurated"] = uncurated or []
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
        if not self.sources.get(name):
            what = "real train images" if name.startswith("real") else f"{name} synthetic images"
            raise SynthsetError(f"CAS train set {label!r} has no data: there are no {what}")
        data = self(name)
        fix = (
            "generate images for it (check generate.images_per_class)"
            if not name.startswith("real")
            else "add real images of it or drop the class"
        )
        check_every_class(data, self.class_names, f"CAS {name} set", fix)
        return data

    def train_data(self, train_set: TrainSetSpec) -> TrainData:
        """The images of one study set."""
        k = len(self.class_names)
        needs_real = train_set.uses_real or train_set.synthetic_multiplier is not None
        real = self._part("real train", train_set.label) if needs_real else None
        if real is not None and train_set.real_subset is not None:
            real = real_subset(real, train_set.real_subset, k)
        syn = (
            self._part(train_set.synthetic_source, train_set.label)
            if train_set.uses_synthetic
            else None
        )
        if syn is not None and train_set.synthetic_multiplier is not None:
            assert real is not None
            syn = synthetic_subset(syn, real, train_set.synthetic_multiplier, k)
        if not train_set.uses_synthetic:
            assert real is not None
            return TrainData(real)
        if not train_set.uses_real:
            assert syn is not None
            return TrainData(syn)
        assert real is not None and syn is not None
        return TrainData(real, syn, train_set.real_batch_fraction)


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
) -> dict[str, Any]:
    """Train on every set of the study for each seed, test on ``real['test']``; write
    ``out_dir/cas.json`` and ``out_dir/cas.csv`` and return the result dict.

    ``on_epoch(train_set, seed, epoch, val_accuracy, val_loss)`` sees every epoch (trackers);
    ``cache_dir`` keeps decoded images as memory-mapped files for later runs; ``uncurated``:
    every generated image, for the ``uncurated`` train set."""
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
    sets = StudySets(real, synthetic, size, channels, list(class_names), cache_dir, uncurated)
    val, test = sets("real val"), sets("real test")
    build_classifier(spec.classifier, num_classes, channels, size)  # fail fast on a bad name
    study = study_sets(spec)
    train_data = {ts.label: sets.train_data(ts) for ts in study}  # fail fast on bad data

    results: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for train_set in study:
        train = train_data[train_set.label]
        runs = []
        for seed in spec.seeds:
            hook = None
            if on_epoch is not None:
                hook = functools.partial(on_epoch, train_set.label, seed)
            with cpu_threads(device, size):
                run = _one_run(
                    spec,
                    train=train,
                    val=val,
                    test=test,
                    num_classes=num_classes,
                    channels=channels,
                    size=size,
                    seed=seed,
                    device=device,
                    progress=progress,
                    desc=f"CAS {train_set.label} seed {seed}",
                    on_epoch=hook,
                )
            runs.append(run)
            rows.append({"train_set": train_set.label} | {k: run[k] for k in _CSV_FIELDS[1:]})
        results[train_set.label] = {"runs": runs, "summary": _summary(runs, train_set, train)}

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
        },
        "train_sets": results,
    }
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "cas.json", result)
    atomic_write_text(out_dir / "cas.csv", _csv(rows))
    return result


def _one_run(
    spec: EvaluateSpec,
    *,
    train: TrainData,
    val: TensorSet,
    test: TensorSet,
    num_classes: int,
    channels: int,
    size: int,
    seed: int,
    device: torch.device,
    progress: bool,
    desc: str,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train one seeded classifier, select it on val, then test it once."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = build_classifier(spec.classifier, num_classes, channels, size)
    if spec.classifier_weights is not None:
        load_weights(model, spec.classifier_weights)
    best = train_classifier(
        model,
        train,
        val,
        spec=spec,
        seed=seed,
        device=device,
        progress=progress,
        desc=desc,
        on_epoch=on_epoch,
    )
    model.load_state_dict(best.state)
    metrics = test_metrics(predict(model, test, device), test.labels, num_classes)
    return {
        "seed": seed,
        "test_accuracy": metrics["test_accuracy"],
        "best_val_accuracy": best.best_val_accuracy,
        "best_epoch": best.best_epoch,
        "val_accuracy_history": best.val_history,
        "val_loss_history": best.val_loss_history,
        "per_class_accuracy": metrics["per_class_accuracy"],
        "confusion_matrix": metrics["confusion_matrix"],
        "n_train": len(train),
        "seconds": round(time.perf_counter() - start, 3),
    }


_CSV_FIELDS = ["train_set", "seed", "test_accuracy", "best_val_accuracy", "n_train"]


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
