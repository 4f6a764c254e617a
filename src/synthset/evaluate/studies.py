"""Which training sets a CAS study trains on, and how their images are picked.

A study is the three base sets (real, synthetic, real+synthetic) plus, from the recipe, a scaling
series (synthetic at k × the real train size) and a sample-complexity series (real subsets, alone
and with all synthetic images). Subsets are stratified per class and chosen with a fixed seed, so
every classifier seed of a set sees the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from synthset.data.subsets import fraction_counts, stratified_indices
from synthset.errors import SynthsetError
from synthset.evaluate.tensors import TensorSet
from synthset.recipe import EvaluateSpec


@dataclass(frozen=True)
class TrainSetSpec:
    """One training set of a study: what it is made of (before the images are picked)."""

    label: str
    # real | synthetic | real+synthetic | uncurated (every generated image) | retrieved (from a
    # pool) | retrieved+synthetic
    kind: str
    real_subset: float | None = None
    synthetic_multiplier: float | None = None
    real_batch_fraction: float | None = None
    synthetic_count: int | None = None  # absolute images per class
    mixed_epoch: Literal["real", "union"] = "real"  # with real_batch_fraction: what an epoch is

    @property
    def uses_real(self) -> bool:
        return self.kind.split("+")[0] == "real"

    @property
    def uses_retrieved(self) -> bool:
        return self.kind.split("+")[0] == "retrieved"

    @property
    def uses_synthetic(self) -> bool:
        return self.kind.split("+")[-1] in ("synthetic", "uncurated")

    @property
    def synthetic_source(self) -> str:
        """Which synthetic images it trains on: the (curated) set, or all generated ones."""
        return "synthetic" if self.kind != "uncurated" else "uncurated"


def _fmt(x: float) -> str:
    return f"{x:g}"


def study_sets(spec: EvaluateSpec) -> list[TrainSetSpec]:
    """Every training set the recipe asks for, base sets first, in a stable order."""
    mix = spec.real_batch_fraction
    epoch = spec.mixed_epoch
    sets = [
        TrainSetSpec(name, name, real_batch_fraction=mix, mixed_epoch=epoch)
        if name == "real+synthetic"
        else TrainSetSpec(name, name)
        for name in spec.train_sets
    ]
    sets += [
        TrainSetSpec(f"synthetic x{_fmt(k)}", "synthetic", synthetic_multiplier=k)
        for k in spec.synthetic_multipliers
    ]
    sets += [
        TrainSetSpec(f"synthetic {n}/class", "synthetic", synthetic_count=n)
        for n in spec.synthetic_counts
    ]
    for f in spec.real_subsets:
        pct = f"real {_fmt(100 * f)}%"
        sets.append(TrainSetSpec(pct, "real", real_subset=f))
        sets.append(
            TrainSetSpec(f"{pct}+synthetic", "real+synthetic", f, None, mix, mixed_epoch=epoch)
        )
    return sets


def stratified_take(data: TensorSet, counts: dict[int, int], what: str) -> TensorSet:
    """``counts[c]`` images of every class ``c``, picked at random with a fixed seed."""
    order = stratified_indices(data.labels, counts, what)
    return TensorSet(data.images[order], data.labels[order])


def class_counts(data: TensorSet, num_classes: int) -> dict[int, int]:
    """Images per class."""
    counts = torch.bincount(data.labels, minlength=num_classes)
    return {c: int(n) for c, n in enumerate(counts)}


def real_subset(real: TensorSet, fraction: float, num_classes: int) -> TensorSet:
    """``fraction`` of every class of ``real`` (at least one image per class)."""
    counts = fraction_counts(real.labels, fraction, num_classes)
    return stratified_take(real, counts, f"real {fraction:g} subset")


def synthetic_subset(
    synthetic: TensorSet, real: TensorSet, multiplier: float, num_classes: int
) -> TensorSet:
    """Synthetic images per class = ``multiplier`` × that class's real train count."""
    counts = {c: max(1, round(n * multiplier)) for c, n in class_counts(real, num_classes).items()}
    return stratified_take(synthetic, counts, f"synthetic x{multiplier:g}")


def synthetic_count_subset(synthetic: TensorSet, count: int, class_names: list[str]) -> TensorSet:
    """``count`` synthetic images of every class; a class with fewer is a one-line error."""
    have = class_counts(synthetic, len(class_names))
    short = [(class_names[c], n) for c, n in have.items() if n < count]
    if short:
        name, n = short[0]
        raise SynthsetError(
            f"evaluate.synthetic_counts: {count} per class asked, but class {name!r} has {n} "
            "synthetic images; raise generate.images_per_class or lower the count"
        )
    return stratified_take(synthetic, dict.fromkeys(have, count), f"synthetic {count}/class")


def check_every_class(data: TensorSet, class_names: list[str], what: str, fix: str) -> None:
    """One-line error naming the first class without any image in ``data``."""
    counts = class_counts(data, len(class_names))
    empty = [class_names[c] for c, n in counts.items() if n == 0]
    if empty:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise SynthsetError(f"{what}: class {empty[0]!r}{more} has no images; {fix}")
