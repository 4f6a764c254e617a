"""Classification Accuracy Score: train a classifier on real / synthetic / mixed images and test
it on held-out real images.

Per train set and seed: train with AdamW and a cosine schedule, measure the real **val** split
after every epoch, keep the weights with the best val accuracy, and only then touch the real
**test** split, exactly once. Model selection never sees the test split.
"""

from __future__ import annotations

import csv
import functools
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from synthset.data.splits import Samples
from synthset.devices import cpu_threads, resolve_device
from synthset.errors import SynthsetError
from synthset.evaluate.classifiers import build_classifier, load_weights, logits
from synthset.evaluate.studies import (
    TrainSetSpec,
    check_every_class,
    real_subset,
    study_sets,
    synthetic_subset,
)
from synthset.evaluate.tensors import TensorSet, check_labels, infer_format, load_tensors
from synthset.recipe import EvaluateSpec
from synthset.store.atomic import atomic_write_json, atomic_write_text

EVAL_BATCH = 1024


@dataclass
class TrainResult:
    """The best-on-validation weights of one training run and how they were found."""

    state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_accuracy: float
    best_val_loss: float = float("inf")
    val_history: list[float] = field(default_factory=list)
    val_loss_history: list[float] = field(default_factory=list)


# ----------------------------------------------------------------------------- batches


def to_input(batch: torch.Tensor) -> torch.Tensor:
    """uint8 images → float in [-1, 1]."""
    return batch.float().div_(127.5).sub_(1.0)


def random_shift(batch: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Shift every image by a random offset in ``[-pad, pad]`` pixels, filling with zeros
    (random crop of the zero-padded image). Offsets come from the CPU generator ``gen`` (so
    results do not depend on the device); the gather runs wherever ``batch`` lives."""
    b, c, h, w = batch.shape
    dev = batch.device
    padded = F.pad(batch, (pad, pad, pad, pad)).permute(0, 2, 3, 1)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(dev)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, :]
    index = torch.arange(b, device=dev)[:, None, None]
    return padded[index, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_flip(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip a random half of the images left-right."""
    flip = (torch.rand(batch.shape[0], generator=gen) < 0.5).to(batch.device)
    return torch.where(flip[:, None, None, None], batch.flip(-1), batch)


def augment(batch: torch.Tensor, mode: bool | str, pad: int, gen: torch.Generator) -> torch.Tensor:
    """The recipe's augmentation (``evaluate.augment``) applied to a uint8 batch."""
    if mode is False:
        return batch
    batch = random_shift(batch, pad, gen)
    return random_flip(batch, gen) if mode == "shift+flip" else batch


@torch.no_grad()
def predict(model: nn.Module, data: TensorSet, device: torch.device) -> torch.Tensor:
    """Predicted labels for every image of ``data`` (model in eval mode)."""
    model.eval()
    preds = [
        logits(model(to_input(data.images[i : i + EVAL_BATCH].to(device)))).argmax(1).cpu()
        for i in range(0, len(data), EVAL_BATCH)
    ]
    return torch.cat(preds)


@torch.no_grad()
def accuracy_and_loss(
    model: nn.Module, data: TensorSet, device: torch.device
) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` on ``data`` (one pass)."""
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(data), EVAL_BATCH):
        out = logits(model(to_input(data.images[i : i + EVAL_BATCH].to(device)))).cpu()
        labels = data.labels[i : i + EVAL_BATCH]
        correct += int((out.argmax(1) == labels).sum())
        loss += float(F.cross_entropy(out, labels, reduction="sum"))
    return correct / len(data), loss / len(data)


def accuracy(model: nn.Module, data: TensorSet, device: torch.device) -> float:
    """Top-1 accuracy of ``model`` on ``data``."""
    return float((predict(model, data, device) == data.labels).float().mean())


# ----------------------------------------------------------------------------- training

EpochCallback = Callable[[int, float, float], None]


@dataclass(frozen=True)
class TrainData:
    """What one run trains on: a single image set, or real and synthetic images mixed at a fixed
    share of every batch (``real_batch_fraction``; an epoch is then one pass over the real set,
    while the synthetic images stream through in their own shuffled order across epochs)."""

    first: TensorSet
    second: TensorSet | None = None
    real_batch_fraction: float | None = None

    @property
    def mixed(self) -> bool:
        return self.second is not None and self.real_batch_fraction is not None

    def __len__(self) -> int:
        return len(self.first) + (len(self.second) if self.second is not None else 0)

    @property
    def image_size(self) -> int:
        return int(self.first.images.shape[-1])

    def split_batch(self, batch_size: int) -> tuple[int, int]:
        """(real, synthetic) images per batch when mixing."""
        assert self.real_batch_fraction is not None
        real_bs = min(batch_size - 1, max(1, round(batch_size * self.real_batch_fraction)))
        return real_bs, batch_size - real_bs

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimizer steps in one epoch (batches of fewer than 2 images are skipped)."""
        if self.mixed:
            real_bs, _ = self.split_batch(batch_size)
            return -(-len(self.first) // real_bs)
        n = len(self)
        return max(1, sum(1 for i in range(0, n, batch_size) if n - i >= 2))

    def epochs(self, batch_size: int, gen: torch.Generator) -> Iterator[Iterator[TensorSet]]:
        """Endless epochs, each an iterator of shuffled batches."""
        if not self.mixed:
            parts = [self.first] if self.second is None else [self.first, self.second]
            data = TensorSet.concat(parts)
            while True:
                yield _plain_batches(data, min(batch_size, len(data)), gen)
        assert self.second is not None
        real_bs, syn_bs = self.split_batch(batch_size)
        stream = _stream(len(self.second), gen)
        while True:
            yield self._mixed_batches(real_bs, syn_bs, stream, gen)

    def _mixed_batches(
        self, real_bs: int, syn_bs: int, stream: Iterator[int], gen: torch.Generator
    ) -> Iterator[TensorSet]:
        assert self.second is not None
        order = torch.randperm(len(self.first), generator=gen)
        for i in range(0, len(order), real_bs):
            r = order[i : i + real_bs]
            s = torch.tensor([next(stream) for _ in range(syn_bs)])
            yield TensorSet(
                torch.cat([self.first.images[r], self.second.images[s]]),
                torch.cat([self.first.labels[r], self.second.labels[s]]),
            )


def _plain_batches(data: TensorSet, batch_size: int, gen: torch.Generator) -> Iterator[TensorSet]:
    order = torch.randperm(len(data), generator=gen)
    for i in range(0, len(data), batch_size):
        idx = order[i : i + batch_size]
        if len(idx) >= 2:  # batch norm cannot train on a single image
            yield TensorSet(data.images[idx], data.labels[idx])


def _stream(n: int, gen: torch.Generator) -> Iterator[int]:
    """Indices ``0..n-1`` in a fresh random order, pass after pass, forever."""
    while True:
        yield from torch.randperm(n, generator=gen).tolist()


def _optimizer(model: nn.Module, spec: EvaluateSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=spec.lr,
            momentum=0.9,
            nesterov=True,
            weight_decay=spec.weight_decay,
        )
    return torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, data: TensorSet, device: torch.device) -> None:
    """Re-estimate every batch-norm layer's running mean and variance on ``data`` (un-augmented),
    as an exact average over the whole set (AdaBN: Li et al., 2016)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = model.training
    model.train()
    for i in range(0, len(data), EVAL_BATCH):
        model(to_input(data.images[i : i + EVAL_BATCH].to(device)))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def weight_average(
    model: nn.Module, ema_epochs: float | None, steps_per_epoch: int
) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights and batch-norm buffers that forgets
    with a horizon of about ``ema_epochs`` epochs (decay ``1 - 1 / (ema_epochs × steps)``)."""
    if ema_epochs is None:
        return None
    decay = 1.0 - 1.0 / max(1.0, ema_epochs * steps_per_epoch)
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train_classifier(
    model: nn.Module,
    train: TensorSet | TrainData,
    val: TensorSet,
    spec: EvaluateSpec,
    seed: int,
    device: torch.device,
    progress: bool = True,
    desc: str = "train",
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train ``model`` on ``train``; return the weights with the best ``val`` accuracy, ties
    (common on small validation sets) broken by the lower validation loss. With
    ``spec.ema_epochs`` the weights validated and kept are the moving average's.

    ``on_epoch(epoch, val_accuracy, val_loss)`` is called after every epoch (trackers, pruning);
    it may raise to stop training."""
    data = train if isinstance(train, TrainData) else TrainData(train)
    model.to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = _optimizer(model, spec)
    steps_per_epoch = data.steps_per_epoch(spec.batch_size)
    steps = spec.epochs * steps_per_epoch
    averaged = weight_average(model, spec.ema_epochs, steps_per_epoch)
    scored = model if averaged is None else averaged.module  # what validation sees and keeps
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    pad = max(1, round(data.image_size / 8))
    best = TrainResult(state={}, best_epoch=-1, best_val_accuracy=-1.0)
    bar = tqdm(range(spec.epochs), desc=desc, disable=not progress, leave=False)
    for epoch, batches in zip(bar, data.epochs(spec.batch_size, gen), strict=False):
        model.train()
        for batch in batches:
            x = augment(batch.images.to(device, non_blocking=True), spec.augment, pad, gen)
            out = logits(model(to_input(x)))
            loss = F.cross_entropy(out, batch.labels.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if averaged is not None:
                averaged.update_parameters(model)
        if spec.real_batchnorm and data.second is not None:
            recalibrate_batchnorm(scored, data.first, device)
        val_acc, val_loss = accuracy_and_loss(scored, val, device)
        best.val_history.append(val_acc)
        best.val_loss_history.append(val_loss)
        if (val_acc, -val_loss) > (best.best_val_accuracy, -best.best_val_loss):
            best.best_val_accuracy, best.best_val_loss, best.best_epoch = val_acc, val_loss, epoch
            best.state = {k: v.detach().clone() for k, v in scored.state_dict().items()}
        bar.set_postfix(val=f"{val_acc:.3f}", best=f"{best.best_val_accuracy:.3f}")
        if on_epoch is not None:
            on_epoch(epoch, val_acc, val_loss)
    bar.close()
    return best


def test_metrics(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Accuracy, per-class accuracy (None for a class without test images), confusion matrix
    (rows: true class, columns: predicted class)."""
    cm = torch.bincount(labels * num_classes + preds, minlength=num_classes**2)
    cm = cm.reshape(num_classes, num_classes)
    support = cm.sum(1)
    per_class = [
        float(cm[k, k] / support[k]) if support[k] > 0 else None for k in range(num_classes)
    ]
    return {
        "test_accuracy": float((preds == labels).float().mean()),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
    }


# ----------------------------------------------------------------------------- CAS


def _summary(runs: list[dict[str, Any]], plan: TrainSetSpec, data: TrainData) -> dict[str, Any]:
    test = np.array([r["test_accuracy"] for r in runs])
    val = np.array([r["best_val_accuracy"] for r in runs])
    per_class = np.array(
        [[np.nan if a is None else a for a in r["per_class_accuracy"]] for r in runs], dtype=float
    )
    with np.errstate(all="ignore"):
        class_mean = np.nanmean(per_class, axis=0) if len(runs) else per_class
    n_real = len(data.first) if plan.uses_real else 0
    return {
        "test_accuracy_mean": float(test.mean()),
        "test_accuracy_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
        "best_val_accuracy_mean": float(val.mean()),
        "n_train": runs[0]["n_train"],
        "n_seeds": len(runs),
        "kind": plan.kind,
        "n_real": n_real,
        "n_synthetic": len(data) - n_real,
        "real_subset": plan.real_subset,
        "synthetic_multiplier": plan.synthetic_multiplier,
        "real_batch_fraction": plan.real_batch_fraction,
        "per_class_accuracy_mean": [None if np.isnan(a) else float(a) for a in class_mean],
        "confusion_matrix": np.sum([r["confusion_matrix"] for r in runs], axis=0).tolist(),
    }


class _Decoder:
    """Decodes each image set at most once, checks its labels, and assembles study sets."""

    def __init__(
        self,
        real: dict[str, Samples],
        synthetic: Samples,
        size: int,
        channels: int,
        class_names: list[str],
        cache_dir: Path | None = None,
    ) -> None:
        self.sources = {f"real {k}": v for k, v in real.items()} | {"synthetic": synthetic}
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
            what = "synthetic images" if name == "synthetic" else "real train images"
            raise SynthsetError(f"CAS train set {label!r} has no data: there are no {what}")
        data = self(name)
        fix = (
            "generate images for it (check generate.images_per_class)"
            if name == "synthetic"
            else "add real images of it or drop the class"
        )
        check_every_class(data, self.class_names, f"CAS {name} set", fix)
        return data

    def train_data(self, plan: TrainSetSpec) -> TrainData:
        """The images of one study set."""
        k = len(self.class_names)
        needs_real = plan.uses_real or plan.synthetic_multiplier is not None
        real = self._part("real train", plan.label) if needs_real else None
        if real is not None and plan.real_subset is not None:
            real = real_subset(real, plan.real_subset, k)
        syn = self._part("synthetic", plan.label) if plan.uses_synthetic else None
        if syn is not None and plan.synthetic_multiplier is not None:
            assert real is not None
            syn = synthetic_subset(syn, real, plan.synthetic_multiplier, k)
        if plan.kind == "real":
            assert real is not None
            return TrainData(real)
        if plan.kind == "synthetic":
            assert syn is not None
            return TrainData(syn)
        assert real is not None and syn is not None
        return TrainData(real, syn, plan.real_batch_fraction)


def run_cas(
    spec: EvaluateSpec,
    real: dict[str, Samples],
    synthetic: Samples,
    class_names: list[str],
    out_dir: Path,
    progress: bool = True,
    on_epoch: Callable[[str, int, int, float, float], None] | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Train on every set of the study for each seed, test on ``real['test']``; write
    ``out_dir/cas.json`` and ``out_dir/cas.csv`` and return the result dict.

    ``on_epoch(train_set, seed, epoch, val_accuracy, val_loss)`` sees every epoch (trackers);
    ``cache_dir`` keeps decoded images as memory-mapped files for later runs."""
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
    data = _Decoder(real, synthetic, size, channels, list(class_names), cache_dir)
    val, test = data("real val"), data("real test")
    build_classifier(spec.classifier, num_classes, channels, size)  # fail fast on a bad name
    plans = study_sets(spec)
    train_sets = {plan.label: data.train_data(plan) for plan in plans}  # fail fast on bad data

    results: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for plan in plans:
        train = train_sets[plan.label]
        runs = []
        for seed in spec.seeds:
            hook = None
            if on_epoch is not None:
                hook = functools.partial(on_epoch, plan.label, seed)
            with cpu_threads(device, size):
                run = _one_run(
                    spec,
                    train,
                    val,
                    test,
                    num_classes,
                    channels,
                    size,
                    seed,
                    device,
                    progress,
                    f"CAS {plan.label} seed {seed}",
                    hook,
                )
            runs.append(run)
            rows.append({"train_set": plan.label} | {k: run[k] for k in _CSV_FIELDS[1:]})
        results[plan.label] = {"runs": runs, "summary": _summary(runs, plan, train)}

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
    best = train_classifier(model, train, val, spec, seed, device, progress, desc, on_epoch)
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
