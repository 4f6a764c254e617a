"""Which ``target_per_class`` images of a class to keep, and from which generator
(``curate.selection``), after the rules: "Just Say the Name" (G-NoCL) over-generates with
several generators and keeps per class a mix chosen by score, share or sample complexity.

- ``top_k``: the best by ``rank_by``, whichever generator made them.
- ``equal``: each generator of the class gets an equal share, filled with its best images.
- ``temperature``: shares ∝ softmax(generator's mean ``rank_by`` score in the class / T).
- ``complexity``: a greedy pick preferring mid-range typicality (neither the easiest nor the
  most atypical images; typicality is minus the relative Mahalanobis distance) and little
  overlap (pixel similarity) with what is already kept.
A share a generator cannot fill goes to the others.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

OVERLAP_WEIGHT = 1.0  # complexity: how much a high similarity to a kept image costs


def quotas(weights: np.ndarray, target: int, available: np.ndarray) -> np.ndarray:
    """Integer shares of ``target`` ∝ ``weights`` (largest remainder), none above what a
    generator has; what one cannot fill is handed to the others by weight."""
    share = np.zeros(len(weights), dtype=np.int64)
    target = min(target, int(available.sum()))
    while share.sum() < target:
        room = available - share
        w = np.where(room > 0, weights, 0.0)
        left = target - int(share.sum())
        ideal = left * w / w.sum()
        add = np.minimum(np.floor(ideal).astype(np.int64), room)
        if add.sum() == 0:  # hand out the remainders one by one, largest first
            order = np.argsort(-(ideal - np.floor(ideal)), kind="stable")
            add[next(i for i in order if room[i] > 0)] = 1
        share += add
    return share


def _best(idx: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    return idx[np.argsort(-score[idx], kind="stable")][:n]


def select_class(
    mode: str,
    idx: np.ndarray,
    target: int,
    rank: np.ndarray,
    members: np.ndarray,
    temperature: float,
    typicality: np.ndarray | None = None,
    similarity: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """The kept indices among ``idx`` (one class's surviving images)."""
    if len(idx) <= target:
        return idx
    if mode == "top_k":
        return _best(idx, rank, target)
    if mode == "complexity":
        assert typicality is not None and similarity is not None
        return _complexity(idx, target, typicality, similarity)
    names = sorted(set(members[idx]))
    groups = [idx[members[idx] == m] for m in names]
    if mode == "equal":
        weights = np.ones(len(groups))
    else:  # temperature
        means = np.array([rank[g].mean() for g in groups])
        logits = (means - means.max()) / temperature
        weights = np.exp(logits)
    share = quotas(weights, target, np.array([len(g) for g in groups]))
    return np.concatenate([_best(g, rank, int(n)) for g, n in zip(groups, share, strict=True)])


def _complexity(
    idx: np.ndarray,
    target: int,
    typicality: np.ndarray,
    similarity: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Greedy: each step keeps the image with the best mid-range typicality minus overlap."""
    t = typicality[idx]
    spread = float(np.subtract(*np.percentile(t, [75, 25]))) or 1.0
    closeness = -np.abs(t - np.median(t)) / spread  # 0 at the median, lower further away
    sim = similarity(idx)  # len(idx) × len(idx)
    overlap = np.zeros(len(idx))
    chosen: list[int] = []
    free = np.ones(len(idx), dtype=bool)
    for _ in range(target):
        gain = np.where(free, closeness - OVERLAP_WEIGHT * overlap, -np.inf)
        j = int(np.argmax(gain))
        chosen.append(j)
        free[j] = False
        overlap = np.maximum(overlap, sim[j])
    return idx[np.array(chosen)]
