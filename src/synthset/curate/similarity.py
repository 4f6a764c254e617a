"""Near-duplicate similarity that survives small shifts and re-encoding: the best normalised
correlation of two grey images over every shift up to ``max_shift`` pixels, on the overlap.

Each image is compared as a ``size``×``size`` grey array; for one shift (dy, dx) the overlapping
crops of both images are mean-centred and scaled to unit norm, so the correlation is their dot
product (1 for identical crops, about 0 for unrelated ones) and one matrix product scores a
whole block of pairs. A copy shifted by a pixel, re-encoded as JPEG or brightened still scores
near 1; two different images of the same class score well below.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

BLOCK = 1024  # query images per matrix product


def shifts(max_shift: int) -> Iterator[tuple[int, int]]:
    """Every (dy, dx) with both in ``-max_shift..max_shift``."""
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            yield dy, dx


def _crop(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The part of each image that overlaps the other image shifted by (dy, dx), normalised
    (flattened, mean 0, norm 1; a flat crop stays 0 and so matches nothing)."""
    size = images.shape[-1]
    rows = slice(max(dy, 0), size + min(dy, 0))
    cols = slice(max(dx, 0), size + min(dx, 0))
    crop = images[:, rows, cols].flatten(1)
    crop = crop - crop.mean(1, keepdim=True)
    return crop / crop.norm(dim=1, keepdim=True).clamp(min=1e-6)


def grey(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``N×C×S×S`` → float ``N×S×S`` (the channels' mean)."""
    return images.float().mean(1)


def best_match(
    queries: torch.Tensor, references: torch.Tensor, max_shift: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query image (float ``N×S×S``): its highest similarity to any reference image
    (``M×S×S``) over all shifts, and that reference's index (-1 and 0 when there is none)."""
    n = len(queries)
    best = torch.zeros(n)
    index = torch.full((n,), -1, dtype=torch.int64)
    if n == 0 or len(references) == 0:
        return best, index
    for dy, dx in shifts(max_shift):
        ref = _crop(references, -dy, -dx)  # the reference moved the other way: same overlap
        for start in range(0, n, BLOCK):
            q = _crop(queries[start : start + BLOCK], dy, dx)
            sim, arg = (q @ ref.T).max(1)
            part = slice(start, start + len(q))
            better = sim > best[part]
            best[part] = torch.where(better, sim, best[part])
            index[part] = torch.where(better, arg, index[part])
    return best, index


def pairwise(images: torch.Tensor, max_shift: int) -> torch.Tensor:
    """The ``N×N`` similarities of ``images`` (float ``N×S×S``) with each other, all shifts."""
    sim = torch.full((len(images), len(images)), -1.0)
    for dy, dx in shifts(max_shift):
        sim = torch.maximum(sim, _crop(images, dy, dx) @ _crop(images, -dy, -dx).T)
    return sim


def greedy_unique(sim: np.ndarray, threshold: float) -> list[int]:
    """Positions kept when walking the images in order and dropping each one at least
    ``threshold`` similar (``sim``: their pairwise similarities) to one kept before it."""
    kept: list[int] = []
    for i in range(len(sim)):
        if not kept or float(sim[i, kept].max()) < threshold:
            kept.append(i)
    return kept
