"""The classifier trainer shared by CAS, the fidelity extractor and tune's proxy classifier.

Batches of uint8 image tensors (plain, or real and synthetic mixed at a fixed share of every
batch), shift / flip augmentation on the training device, AdamW or SGD with a cosine schedule,
an optional moving average of the weights and batch-norm recalibration on the real images. After
every epoch the real **val** split is measured and the weights with the best val accuracy are
kept; the caller tests them on held-out images once (:func:`test_metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from synthset.evaluate.classifiers import logits
from synthset.evaluate.tensors import TensorSet
from synthset.recipe import EvaluateSpec

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
def predict_logits(model: nn.Module, data: TensorSet, device: torch.device) -> torch.Tensor:
    """Class scores (``N×K`` logits) for every image of ``data`` (model in eval mode)."""
    model.eval()
    out = [
        logits(model(to_input(data.images[i : i + EVAL_BATCH].to(device)))).float().cpu()
        for i in range(0, len(data), EVAL_BATCH)
    ]
    return torch.cat(out)


def predict(model: nn.Module, data: TensorSet, device: torch.device) -> torch.Tensor:
    """Predicted labels for every image of ``data`` (model in eval mode)."""
    return predict_logits(model, data, device).argmax(1)


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
    while the synthetic images stream through in their own shuffled order across epochs; with
    ``mixed_epoch`` "union", an epoch is as many batches as one pass over real and synthetic
    together, the real images streaming too)."""

    first: TensorSet
    second: TensorSet | None = None
    real_batch_fraction: float | None = None
    mixed_epoch: Literal["real", "union"] = "real"

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
            if self.mixed_epoch == "union":
                return -(-len(self) // batch_size)
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
        if self.mixed_epoch == "union":
            real_stream = _stream(len(self.first), gen)
            steps = self.steps_per_epoch(batch_size)
            while True:
                yield self._union_batches(real_bs, syn_bs, real_stream, stream, steps)
        while True:
            yield self._mixed_batches(real_bs, syn_bs, stream, gen)

    def _union_batches(
        self,
        real_bs: int,
        syn_bs: int,
        real_stream: Iterator[int],
        stream: Iterator[int],
        steps: int,
    ) -> Iterator[TensorSet]:
        for _ in range(steps):
            r = torch.tensor([next(real_stream) for _ in range(real_bs)])
            s = torch.tensor([next(stream) for _ in range(syn_bs)])
            yield self._batch(r, s)

    def _batch(self, real: torch.Tensor, synthetic: torch.Tensor) -> TensorSet:
        """Real images ``real`` and synthetic images ``synthetic`` (indices) in one batch."""
        assert self.second is not None
        return TensorSet(
            torch.cat([self.first.images[real], self.second.images[synthetic]]),
            torch.cat([self.first.labels[real], self.second.labels[synthetic]]),
        )

    def _mixed_batches(
        self, real_bs: int, syn_bs: int, stream: Iterator[int], gen: torch.Generator
    ) -> Iterator[TensorSet]:
        order = torch.randperm(len(self.first), generator=gen)
        for i in range(0, len(order), real_bs):
            r = order[i : i + real_bs]
            s = torch.tensor([next(stream) for _ in range(syn_bs)])
            yield self._batch(r, s)


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


def head(model: nn.Module) -> nn.Linear | None:
    """The classifier's last linear layer (its head), None when it has none."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _param_groups(model: nn.Module, spec: EvaluateSpec) -> list[dict[str, Any]]:
    """One group at ``lr``, or with ``backbone_lr_scale`` < 1 the head at ``lr`` and every
    other parameter at ``lr × backbone_lr_scale`` (layer-wise learning rates)."""
    last = head(model)
    if spec.backbone_lr_scale == 1.0 or last is None:
        return [{"params": list(model.parameters()), "lr": spec.lr}]
    top = {id(p) for p in last.parameters()}
    backbone = [p for p in model.parameters() if id(p) not in top]
    return [
        {"params": backbone, "lr": spec.lr * spec.backbone_lr_scale},
        {"params": list(last.parameters()), "lr": spec.lr},
    ]


def _optimizer(model: nn.Module, spec: EvaluateSpec) -> torch.optim.Optimizer:
    groups = _param_groups(model, spec)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=spec.lr, momentum=0.9, nesterov=True, weight_decay=spec.weight_decay
        )
    return torch.optim.AdamW(groups, lr=spec.lr, weight_decay=spec.weight_decay)


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


#: Top-k accuracy is reported for k = 5 when there are more than 5 classes.
TOP_K = 5


def test_metrics(
    preds: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    scores: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy (the mean of the per-class accuracies), per-class accuracy
    (None for a class without test images), the confusion matrix (rows: true class, columns:
    predicted class) and, with ``scores`` (``N×K`` logits) and more than 5 classes, top-5
    accuracy."""
    cm = torch.bincount(labels * num_classes + preds, minlength=num_classes**2)
    cm = cm.reshape(num_classes, num_classes)
    support = cm.sum(1)
    per_class = [
        float(cm[k, k] / support[k]) if support[k] > 0 else None for k in range(num_classes)
    ]
    present = [a for a in per_class if a is not None]
    out: dict[str, Any] = {
        "test_accuracy": float((preds == labels).float().mean()),
        "test_balanced_accuracy": sum(present) / len(present) if present else 0.0,
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
    }
    if scores is not None and num_classes > TOP_K:
        top = scores.topk(TOP_K, dim=1).indices
        out["test_top5_accuracy"] = float((top == labels[:, None]).any(1).float().mean())
    return out
