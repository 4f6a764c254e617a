"""``evaluate/cas.json`` read into one normalized record per train set, tolerant of older files
that lack the study keys (kind, n_real, multipliers): those are inferred from the label."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any

KINDS = ("real", "synthetic", "real+synthetic")


@dataclass(frozen=True)
class TrainSet:
    """The summary of one train set over its seeds."""

    label: str
    kind: str
    mean: float
    std: float
    best_val: float | None
    n_train: int | None
    n_real: int | None
    n_synthetic: int | None
    seeds: list[int]
    real_subset: float | None
    synthetic_multiplier: float | None
    real_batch_fraction: float | None
    per_class: list[float | None]
    confusion: list[list[int]] | None
    seconds: float | None
    balanced: float | None = None  # balanced accuracy (mean over seeds)
    top5: float | None = None  # top-5 accuracy (more than 5 classes)
    ood: float | None = None  # accuracy on evaluate.ood_test

    @property
    def canonical(self) -> bool:
        """One of the three plain sets (all real, all synthetic, both), not a study point."""
        return self.label in KINDS


def _kind(label: str) -> str:
    if "+" in label:
        return "real+synthetic"
    return "synthetic" if label.startswith("synthetic") else "real"


def _multiplier(label: str) -> float | None:
    m = re.search(r"(?:^|\s)x\s*([0-9]*\.?[0-9]+)\b", label)
    return float(m.group(1)) if m else None


def _subset(label: str) -> float | None:
    m = re.search(r"([0-9]*\.?[0-9]+)\s*%", label)
    return float(m.group(1)) / 100 if m else None


def _mean_lists(rows: list[list[float | None]]) -> list[float | None]:
    """Element-wise mean ignoring ``None``."""
    if not rows:
        return []
    out: list[float | None] = []
    for column in zip(*rows, strict=False):
        values = [v for v in column if v is not None]
        out.append(sum(values) / len(values) if values else None)
    return out


def _sum_matrices(runs: list[dict[str, Any]]) -> list[list[int]] | None:
    mats = [r["confusion_matrix"] for r in runs if r.get("confusion_matrix")]
    if not mats:
        return None
    return [
        [sum(m[i][j] for m in mats) for j in range(len(mats[0][i]))] for i in range(len(mats[0]))
    ]


def _one(label: str, entry: dict[str, Any]) -> TrainSet | None:
    s = entry.get("summary") or {}
    runs = [r for r in entry.get("runs") or [] if isinstance(r, dict)]
    accs = [r["test_accuracy"] for r in runs if r.get("test_accuracy") is not None]
    mean = s.get("test_accuracy_mean", statistics.fmean(accs) if accs else None)
    if mean is None:
        return None
    std = s.get("test_accuracy_std", statistics.pstdev(accs) if len(accs) > 1 else 0.0)
    seconds = [r["seconds"] for r in runs if r.get("seconds") is not None]
    per_class = s.get("per_class_accuracy_mean") or _mean_lists(
        [r["per_class_accuracy"] for r in runs if r.get("per_class_accuracy")]
    )
    return TrainSet(
        label=label,
        kind=s.get("kind") or _kind(label),
        mean=float(mean),
        std=float(std or 0.0),
        best_val=s.get("best_val_accuracy_mean"),
        n_train=s.get("n_train", runs[0].get("n_train") if runs else None),
        n_real=s.get("n_real"),
        n_synthetic=s.get("n_synthetic"),
        seeds=[r["seed"] for r in runs if "seed" in r],
        real_subset=s["real_subset"] if "real_subset" in s else _subset(label),
        synthetic_multiplier=(
            s["synthetic_multiplier"] if "synthetic_multiplier" in s else _multiplier(label)
        ),
        real_batch_fraction=s.get("real_batch_fraction"),
        per_class=list(per_class),
        confusion=s.get("confusion_matrix") or _sum_matrices(runs),
        seconds=sum(seconds) if seconds else None,
        balanced=s.get("test_balanced_accuracy_mean"),
        top5=s.get("test_top5_accuracy_mean"),
        ood=s.get("ood_test_accuracy_mean"),
    )


def _order(t: TrainSet) -> tuple[Any, ...]:
    return (
        not t.canonical,
        KINDS.index(t.kind) if t.kind in KINDS else len(KINDS),
        t.real_subset if t.real_subset is not None else 2.0,
        t.synthetic_multiplier if t.synthetic_multiplier is not None else float("inf"),
        t.label,
    )


def train_sets(cas: dict[str, Any] | None) -> list[TrainSet]:
    """Every readable train set of ``cas.json``: the plain three first, then study points."""
    if not cas or not isinstance(cas.get("train_sets"), dict):
        return []
    out = []
    for label, entry in cas["train_sets"].items():
        try:
            one = _one(str(label), entry) if isinstance(entry, dict) else None
        except (KeyError, TypeError, ValueError, IndexError):
            one = None  # a malformed entry is left out, the others still show
        if one is not None:
            out.append(one)
    return sorted(out, key=_order)


def scaling_points(sets: list[TrainSet], kind: str) -> list[tuple[float, TrainSet]]:
    """(x, set) of the ``kind`` sets with a synthetic multiplier on the full real data; x is the
    number of synthetic images when known, else the multiplier."""
    pts = [
        t
        for t in sets
        if t.kind == kind and t.synthetic_multiplier is not None and t.real_subset is None
    ]
    use_n = all(t.n_synthetic for t in pts)
    xs = [float(t.n_synthetic or 0) if use_n else float(t.synthetic_multiplier or 0) for t in pts]
    return sorted(zip(xs, pts, strict=True), key=lambda p: p[0])


def subset_points(sets: list[TrainSet], kind: str) -> list[tuple[float, TrainSet]]:
    """(fraction of real train data, set) for the ``kind`` sets of the real-subset study, the
    full-real set (fraction 1) included; synthetic-multiplier points excluded."""
    pts = []
    for t in sets:
        if t.kind != kind or t.synthetic_multiplier is not None:
            continue
        if t.real_subset is not None:
            pts.append((t.real_subset, t))
        elif t.canonical:
            pts.append((1.0, t))
    return sorted(pts, key=lambda p: p[0])


def find(sets: list[TrainSet], label: str) -> TrainSet | None:
    return next((t for t in sets if t.label == label), None)
