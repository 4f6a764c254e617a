"""Online class-incremental continual learning on a stream (``evaluate.continual``), the
protocol of "Just Say the Name" (G-NoCL, arXiv 2403.10853) and of Koh et al. (ICLR 2022).

The classes arrive in a seeded order, ``classes_per_task`` at a time; each task's training
images (real, or the synthetic set, or the curated view) stream past **once**, in batches. The
learner takes ``online_iterations`` gradient steps per stream batch, each on the batch plus a
batch drawn from its replay buffer (**experience replay**, ER: a reservoir sample of everything
seen, ``buffer_size`` images); ``der++`` (dark experience replay, Buzzega et al., NeurIPS
2020) also keeps the logits each buffered image had when it streamed past and adds
``der_alpha`` × the MSE to them on one buffer batch plus ``der_beta`` × the cross-entropy on
another; ``finetune`` is the same learner without a buffer (the lower bound). Every
``eval_every`` stream images the model is tested on the real test images of the classes seen
so far (anytime inference):

- **A_auc** — the area under that accuracy-over-time curve, normalised by the stream length
  (the mean of the curve for evenly spaced evaluations);
- **A_last** — accuracy on the whole real test split (all classes) at the end;
- the same two on ``ood_test`` (a real folder with the same classes, another domain).

The test split here is measured along the stream as the papers do; no choice is made on it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from synthset.devices import cpu_threads, resolve_device
from synthset.errors import SynthsetError
from synthset.evaluate.classifiers import build_classifier, logits
from synthset.evaluate.tensors import TensorSet
from synthset.evaluate.train import augment, predict, to_input
from synthset.recipe import ContinualSpec


def task_classes(num_classes: int, per_task: int, seed: int) -> list[list[int]]:
    """The classes in arrival order (a seeded permutation), ``per_task`` per task (the last
    task takes what is left)."""
    order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[i : i + per_task] for i in range(0, num_classes, per_task)]


def stream_order(train: TensorSet, tasks: list[list[int]], seed: int) -> list[torch.Tensor]:
    """Each task's training images (indices into ``train``), shuffled with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for classes in tasks:
        idx = torch.nonzero(torch.isin(train.labels, torch.tensor(classes))).flatten()
        out.append(idx[torch.randperm(len(idx), generator=gen)])
    return out


class Reservoir:
    """A fixed-size uniform sample of everything offered so far (reservoir sampling)."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.items: list[int] = []
        self.seen = 0
        self.rng = random.Random(seed)

    def offer(self, indices: list[int]) -> None:
        for i in indices:
            self.seen += 1
            if len(self.items) < self.capacity:
                self.items.append(i)
            else:
                j = self.rng.randrange(self.seen)
                if j < self.capacity:
                    self.items[j] = i

    def sample(self, n: int) -> list[int]:
        if not self.items:
            return []
        return self.rng.sample(self.items, min(n, len(self.items)))


class DarkReplay:
    """DER++'s two replay terms: the buffer keeps each image's logits from when it streamed
    past; the learner matches them (MSE, ``der_alpha``) on one buffer batch and the labels
    (cross-entropy, ``der_beta``) on another. Both batches ride in the stream batch's forward
    pass (one batch-norm batch, as experience replay's)."""

    def __init__(self, spec: ContinualSpec, labels: torch.Tensor, buffer: Reservoir) -> None:
        self.spec, self.labels, self.buffer = spec, labels, buffer
        self.logits: dict[int, torch.Tensor] = {}  # stream index -> its logits when it arrived

    def sample(self) -> tuple[list[int], list[int]]:
        """Two independent buffer batches (empty while the buffer is)."""
        n = self.spec.replay_batch_size
        return self.buffer.sample(n), self.buffer.sample(n)

    def loss(
        self,
        first_out: torch.Tensor,
        first: list[int],
        second_out: torch.Tensor,
        second: list[int],
    ) -> torch.Tensor | float:
        """``der_alpha`` × MSE of ``first``'s outputs to their stored logits + ``der_beta`` ×
        CE of ``second``'s outputs to their labels (0 without buffer images)."""
        if not first:
            return 0.0
        stored = torch.stack([self.logits[i] for i in first]).to(first_out.device)
        mse = F.mse_loss(first_out, stored)
        ce = F.cross_entropy(second_out, self.labels[second].to(second_out.device))
        return self.spec.der_alpha * mse + self.spec.der_beta * ce

    def remember(self, batch: list[int], batch_logits: torch.Tensor) -> None:
        """Store the logits of the batch's images the buffer took; forget the ones it dropped."""
        kept = set(self.buffer.items)
        for i, z in zip(batch, batch_logits.detach().cpu(), strict=True):
            if i in kept:
                self.logits[i] = z
        self.logits = {i: z for i, z in self.logits.items() if i in kept}


@dataclass
class StreamResult:
    """One learner on one stream: the curve and the two numbers."""

    curve: list[tuple[int, float]] = field(default_factory=list)  # (images seen, accuracy)
    task_accuracy: list[float] = field(default_factory=list)  # after each task, seen classes
    task_ends: list[int] = field(default_factory=list)  # stream images seen at each task's end
    a_last: float = 0.0
    ood_curve: list[tuple[int, float]] = field(default_factory=list)
    ood_a_last: float | None = None

    @staticmethod
    def area(curve: list[tuple[int, float]]) -> float:
        """Accuracy-over-time area, normalised by the stream length (step interpolation)."""
        if not curve:
            return 0.0
        total, previous, area = curve[-1][0], 0, 0.0
        for seen, acc in curve:
            area += acc * (seen - previous)
            previous = seen
        return area / max(1, total)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "a_auc": self.area(self.curve),
            "a_last": self.a_last,
            "task_accuracy": self.task_accuracy,
            "task_ends": self.task_ends,
            "curve": [[s, a] for s, a in self.curve],
        }
        if self.ood_a_last is not None:
            out |= {
                "ood_a_auc": self.area(self.ood_curve),
                "ood_a_last": self.ood_a_last,
                "ood_curve": [[s, a] for s, a in self.ood_curve],
            }
        return out


def _accuracy_on(model: Any, data: TensorSet, classes: set[int], device: torch.device) -> float:
    """Accuracy on the images of ``classes`` only (the classes seen so far)."""
    keep = torch.isin(data.labels, torch.tensor(sorted(classes)))
    part = TensorSet(data.images[keep], data.labels[keep])
    if not len(part):
        return 0.0
    return float((predict(model, part, device) == part.labels).float().mean())


def run_stream(
    spec: ContinualSpec,
    method: str,
    train: TensorSet,
    test: TensorSet,
    num_classes: int,
    seed: int,
    ood: TensorSet | None = None,
    device: str = "auto",
    progress: bool = False,
    desc: str = "stream",
) -> StreamResult:
    """One online learner (``er``, ``der++`` or ``finetune``) over the class-incremental stream of
    ``train``; tested along the way on ``test`` (and ``ood``)."""
    dev = resolve_device(device)
    channels, size = int(train.images.shape[1]), int(train.images.shape[-1])
    tasks = task_classes(num_classes, spec.classes_per_task, spec.class_order_seed)
    order = stream_order(train, tasks, seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    result = StreamResult()
    with cpu_threads(dev, size):
        model = build_classifier(spec.classifier, num_classes, channels, size).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
        buffer = Reservoir(spec.buffer_size if method in ("er", "der++") else 0, seed)
        dark = DarkReplay(spec, train.labels, buffer)
        seen_classes: set[int] = set()
        seen, next_eval = 0, spec.eval_every
        pad = max(1, round(size / 8))
        total = sum(len(o) for o in order)
        bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
        for classes, indices in zip(tasks, order, strict=True):
            seen_classes |= set(classes)
            for start in range(0, len(indices), spec.batch_size):
                batch = indices[start : start + spec.batch_size].tolist()
                for _ in range(spec.online_iterations):
                    first, second = dark.sample() if method == "der++" else ([], [])
                    replay = buffer.sample(spec.replay_batch_size) if method == "er" else []
                    idx = torch.tensor(batch + replay + first + second)
                    x = augment(train.images[idx].to(dev), spec.augment, pad, gen)
                    model.train()
                    out = logits(model(to_input(x)))
                    b = len(batch) + len(replay)
                    loss = F.cross_entropy(out[:b], train.labels[idx[:b]].to(dev))
                    if method == "der++":
                        split = b + len(first)
                        loss = loss + dark.loss(out[b:split], first, out[split:], second)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                buffer.offer(batch)
                if method == "der++":
                    dark.remember(batch, out[: len(batch)])
                seen += len(batch)
                bar.update(len(batch))
                while seen >= next_eval:
                    result.curve.append((seen, _accuracy_on(model, test, seen_classes, dev)))
                    if ood is not None:
                        acc = _accuracy_on(model, ood, seen_classes, dev)
                        result.ood_curve.append((seen, acc))
                    next_eval += spec.eval_every
            result.task_accuracy.append(_accuracy_on(model, test, seen_classes, dev))
            result.task_ends.append(seen)
        bar.close()
        if not result.curve or result.curve[-1][0] != seen:  # the end of the stream
            result.curve.append((seen, result.task_accuracy[-1]))
            if ood is not None:
                result.ood_curve.append((seen, _accuracy_on(model, ood, seen_classes, dev)))
        result.a_last = _accuracy_on(model, test, set(range(num_classes)), dev)
        if ood is not None:
            result.ood_a_last = _accuracy_on(model, ood, set(range(num_classes)), dev)
    return result


def _mean_std(values: list[float]) -> dict[str, float]:
    arr = np.array(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def run_continual(
    spec: ContinualSpec,
    streams: dict[str, TensorSet],
    test: TensorSet,
    class_names: list[str],
    ood: TensorSet | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Every (stream, method, seed): the runs and their mean ± std, as ``continual.json``."""
    k = len(class_names)
    if spec.classes_per_task >= k:
        raise SynthsetError(
            f"evaluate.continual.classes_per_task {spec.classes_per_task}: the stream needs at "
            f"least 2 tasks, so use fewer than the {k} classes"
        )
    for name, data in streams.items():
        missing = sorted(set(range(k)) - set(data.labels.tolist()))
        if missing:
            raise SynthsetError(
                f"evaluate.continual: the {name} stream has no images of class "
                f"{class_names[missing[0]]!r}; every class must arrive in the stream"
            )
    results: dict[str, Any] = {}
    for name, data in streams.items():
        results[name] = {}
        for method in spec.methods:
            runs = []
            for seed in spec.seeds:
                run = run_stream(
                    spec,
                    method,
                    data,
                    test,
                    k,
                    seed,
                    ood,
                    device,
                    progress,
                    desc=f"continual {name} {method} seed {seed}",
                )
                runs.append({"seed": seed} | run.as_dict())
            summary = {m: _mean_std([r[m] for r in runs]) for m in ("a_auc", "a_last")}
            if ood is not None:
                summary |= {m: _mean_std([r[m] for r in runs]) for m in ("ood_a_auc", "ood_a_last")}
            results[name][method] = {"runs": runs, "summary": summary}
    tasks = task_classes(k, spec.classes_per_task, spec.class_order_seed)
    return {
        "config": spec.model_dump(mode="json")
        | {"tasks": [[class_names[c] for c in t] for t in tasks], "n_test": len(test)},
        "streams": results,
    }
