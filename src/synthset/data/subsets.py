"""Fixed stratified subsets: which images of each class a "real 10 %" set holds.

One seed for every use, so the classifier studies and the adapt stage (``adapt.real_subset``)
pick the same real images: a generator adapted on real 10 % has seen exactly the real 10 % that
the "real 10 % + synthetic" row trains on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from synthset.data.splits import Samples
from synthset.errors import SynthsetError

SUBSET_SEED = 1234  # fixed: subsets must not change with the classifier or recipe seed


def stratified_indices(labels: torch.Tensor, counts: dict[int, int], what: str) -> torch.Tensor:
    """Sorted indices of ``counts[c]`` items of every class ``c``, picked with a fixed seed."""
    gen = torch.Generator().manual_seed(SUBSET_SEED)
    keep = []
    for c, n in sorted(counts.items()):
        idx = torch.nonzero(labels == c).flatten()
        if n > len(idx):
            raise SynthsetError(
                f"{what}: class {c} needs {n} images but has {len(idx)}; generate more "
                "(raise generate.images_per_class) or lower evaluate.synthetic_multipliers"
            )
        keep.append(idx[torch.randperm(len(idx), generator=gen)[:n]])
    return torch.sort(torch.cat(keep)).values


def fraction_counts(labels: torch.Tensor, fraction: float, num_classes: int) -> dict[int, int]:
    """``fraction`` of every class's count (at least one image per class)."""
    counts = torch.bincount(labels, minlength=num_classes)
    return {c: max(1, round(int(n) * fraction)) for c, n in enumerate(counts)}


def fraction_indices(labels: Sequence[int], fraction: float, num_classes: int) -> list[int]:
    """Indices of the stratified ``fraction`` subset of items with these ``labels``."""
    tensor = torch.tensor(list(labels), dtype=torch.long)
    counts = fraction_counts(tensor, fraction, num_classes)
    return stratified_indices(tensor, counts, f"real {fraction:g} subset").tolist()


def subset_samples(samples: Samples, fraction: float | None, num_classes: int) -> Samples:
    """``samples`` cut to their stratified ``fraction`` (all of them for None or ≥ 1): the real
    images a low-data study (``adapt.real_subset``) lets the synthetic side learn from."""
    if fraction is None or fraction >= 1:
        return list(samples)
    keep = fraction_indices([lbl for _, lbl in samples], fraction, num_classes)
    return [samples[i] for i in keep]
