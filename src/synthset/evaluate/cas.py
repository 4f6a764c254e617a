"""Classification Accuracy Score: train a classifier on real / synthetic / mixed images and test
it on held-out real images.

Per train set and seed: train with AdamW and a cosine schedule, measure the real **val** split
after every epoch, keep the weights with the best val accuracy, and only then touch the real
**test** split, exactly once. Model selection never sees the test split.
"""

from __future__ import annotations

import contextlib
import csv
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
from tqdm.auto import tqdm

from synthset.data.splits import Samples
from synthset.errors import SynthsetError
from synthset.evaluate.classifiers import build_classifier, logits
from synthset.evaluate.tensors import TensorSet, check_labels, infer_format, load_tensors
from synthset.recipe import EvaluateSpec
from synthset.store.atomic import atomic_write_json, atomic_write_text

TRAIN_SETS = ("real", "synthetic", "real+synthetic")
EVAL_BATCH = 1024
TINY_IMAGE = 16  # at or below this size, CPU training runs on one thread (see _cpu_threads)


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
    (random crop of the zero-padded image). No flips: digits and text break under them."""
    b, c, h, w = batch.shape
    padded = F.pad(batch, (pad, pad, pad, pad)).permute(0, 2, 3, 1)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, :]
    return padded[torch.arange(b)[:, None, None], rows, cols].permute(0, 3, 1, 2).contiguous()


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


def train_classifier(
    model: nn.Module,
    train: TensorSet,
    val: TensorSet,
    spec: EvaluateSpec,
    seed: int,
    device: torch.device,
    progress: bool = True,
    desc: str = "train",
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train``; return the weights with the best ``val`` accuracy, ties
    (common on small validation sets) broken by the lower validation loss.

    ``on_epoch(epoch, val_accuracy, val_loss)`` is called after every epoch (trackers, pruning);
    it may raise to stop training."""
    model.to(device)
    gen = torch.Generator().manual_seed(seed)
    n = len(train)
    batch_size = min(spec.batch_size, n)
    steps_per_epoch = max(1, sum(1 for i in range(0, n, batch_size) if n - i >= 2))
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.epochs * steps_per_epoch)
    pad = max(1, round(train.images.shape[-1] / 8))
    best = TrainResult(state={}, best_epoch=-1, best_val_accuracy=-1.0)
    bar = tqdm(range(spec.epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2:  # batch norm cannot train on a single image
                continue
            x = train.images[idx]
            if spec.augment:
                x = random_shift(x, pad, gen)
            out = logits(model(to_input(x.to(device))))
            loss = F.cross_entropy(out, train.labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        val_acc, val_loss = accuracy_and_loss(model, val, device)
        best.val_history.append(val_acc)
        best.val_loss_history.append(val_loss)
        if (val_acc, -val_loss) > (best.best_val_accuracy, -best.best_val_loss):
            best.best_val_accuracy, best.best_val_loss, best.best_epoch = val_acc, val_loss, epoch
            best.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
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


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    test = np.array([r["test_accuracy"] for r in runs])
    val = np.array([r["best_val_accuracy"] for r in runs])
    return {
        "test_accuracy_mean": float(test.mean()),
        "test_accuracy_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
        "best_val_accuracy_mean": float(val.mean()),
        "n_train": runs[0]["n_train"],
        "n_seeds": len(runs),
    }


@contextlib.contextmanager
def _cpu_threads(device: torch.device, size: int) -> Iterator[None]:
    """Use one intra-op thread while training on tiny images on the CPU, then restore.

    Each op on a batch of 8×8 images is too small to split across threads: measured on a busy
    2-core machine, the digits CAS took 105 s with 2 threads and 16 s with one."""
    if device.type != "cpu" or size > TINY_IMAGE:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Decoder:
    """Decodes each image set at most once and checks its labels."""

    def __init__(
        self,
        real: dict[str, Samples],
        synthetic: Samples,
        size: int,
        channels: int,
        num_classes: int,
    ) -> None:
        self.sources = {f"real {k}": v for k, v in real.items()} | {"synthetic": synthetic}
        self.size, self.channels, self.num_classes = size, channels, num_classes
        self.cache: dict[str, TensorSet] = {}

    def __call__(self, name: str) -> TensorSet:
        if name not in self.cache:
            samples = self.sources.get(name) or []
            if not samples:
                raise SynthsetError(f"CAS: the {name} image set is empty")
            data = load_tensors(samples, self.size, self.channels, name)
            check_labels(data, self.num_classes, name)
            self.cache[name] = data
        return self.cache[name]

    def train_set(self, name: str) -> TensorSet:
        if name not in TRAIN_SETS:
            raise SynthsetError(f"CAS: unknown train set {name!r}; use {', '.join(TRAIN_SETS)}")
        parts = ["real train" if p == "real" else p for p in name.split("+")]
        for part in parts:
            if not self.sources.get(part):
                what = "synthetic images" if part == "synthetic" else "real train images"
                raise SynthsetError(f"CAS train set {name!r} has no data: there are no {what}")
        return TensorSet.concat([self(p) for p in parts])


def run_cas(
    spec: EvaluateSpec,
    real: dict[str, Samples],
    synthetic: Samples,
    class_names: list[str],
    out_dir: Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Train on each of ``spec.train_sets`` for each seed, test on ``real['test']``; write
    ``out_dir/cas.json`` and ``out_dir/cas.csv`` and return the result dict."""
    from synthset.generators.base import resolve_device

    num_classes = len(class_names)
    if num_classes < 2:
        raise SynthsetError(f"CAS needs at least 2 classes (got {num_classes})")
    for split in ("val", "test"):
        if not real.get(split):
            raise SynthsetError(f"CAS: the real {split} split is empty; add real {split} images")
    reference = real.get("train") or real["val"]
    size, channels = infer_format(reference, "real train")
    size, channels = spec.image_size or size, spec.channels or channels
    device = resolve_device(spec.device)
    data = _Decoder(real, synthetic, size, channels, num_classes)
    val, test = data("real val"), data("real test")
    build_classifier(spec.classifier, num_classes, channels, size)  # fail fast on a bad name

    results: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for set_name in spec.train_sets:
        train = data.train_set(set_name)
        runs = []
        for seed in spec.seeds:
            with _cpu_threads(device, size):
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
                    f"CAS {set_name} seed {seed}",
                )
            runs.append(run)
            rows.append({"train_set": set_name} | {k: run[k] for k in _CSV_FIELDS[1:]})
        results[set_name] = {"runs": runs, "summary": _summary(runs)}

    result = {
        "config": {
            "classifier": spec.classifier,
            "image_size": size,
            "channels": channels,
            "epochs": spec.epochs,
            "batch_size": spec.batch_size,
            "lr": spec.lr,
            "weight_decay": spec.weight_decay,
            "augment": spec.augment,
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
    train: TensorSet,
    val: TensorSet,
    test: TensorSet,
    num_classes: int,
    channels: int,
    size: int,
    seed: int,
    device: torch.device,
    progress: bool,
    desc: str,
) -> dict[str, Any]:
    """Train one seeded classifier, select it on val, then test it once."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = build_classifier(spec.classifier, num_classes, channels, size)
    best = train_classifier(model, train, val, spec, seed, device, progress, desc)
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
