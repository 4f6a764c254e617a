"""Rules turn score columns into the kept set, class by class.

Every rule looks at all images of a class (so rules do not depend on their order) and an image
is kept only if every rule keeps it; the reason of a dropped image is the first rule that drops
it. Leaks are dropped before any rule, near-duplicates among the survivors after them, and
``target_per_class`` keeps the best survivors last."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from synthset.curate.ensemble import select_class
from synthset.curate.similarity import greedy_unique
from synthset.errors import SynthsetError
from synthset.recipe import CurateSpec, RuleSpec

Scores = dict[str, np.ndarray]


def rule_label(index: int, rule: RuleSpec, percentile: float | None = None) -> str:
    """How the view and the report name a rule, e.g. ``rule1:typicality:percentile=20``."""
    if rule.threshold is not None:
        what = f"threshold={rule.threshold:g}"
    elif rule.class_thresholds is not None:
        what = "class_thresholds"
    elif rule.top_k is not None:
        what = f"top_k={rule.top_k}"
    else:
        value = percentile if percentile is not None else rule.percentile
        what = f"percentile={value:g}" if isinstance(value, float | int) else f"percentile={value}"
    return f"rule{index + 1}:{rule.score}:{what}"


def rule_keeps(
    rule: RuleSpec,
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    percentile: float | None = None,
) -> np.ndarray:
    """Which images ``rule`` keeps (``percentile``: the value an 'auto' rule is tried with)."""
    if rule.threshold is not None:
        return scores >= rule.threshold
    if rule.class_thresholds is not None:
        unknown = sorted(set(rule.class_thresholds) - set(class_names))
        if unknown:
            raise SynthsetError(
                f"curate.rules class_thresholds: {unknown[0]!r} is not a class; use the class "
                "names of classes.json"
            )
        limits = np.array([rule.class_thresholds.get(n, -np.inf) for n in class_names])
        return scores >= limits[labels]
    keep = np.zeros(len(scores), dtype=bool)
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        order = idx[np.argsort(-scores[idx], kind="stable")]  # best first, ties by index
        if rule.top_k is not None:
            n = min(rule.top_k, len(idx))
        else:
            p = percentile if percentile is not None else rule.percentile
            assert isinstance(p, float | int)
            n = len(idx) - int(np.floor(len(idx) * p / 100.0))
        keep[order[:n]] = True
    return keep


def decide(
    spec: CurateSpec,
    scores: Scores,
    labels: np.ndarray,
    class_names: list[str],
    leaks: list[str | None],
    percentiles: dict[int, float],
    members: np.ndarray | None = None,
    similar: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, list[str | None]]:
    """The kept mask and each image's reason for being dropped (None when kept).

    ``leaks``: a reason per image from the leak check (None: no leak). ``percentiles``: the
    value of each 'auto' rule (by index). ``members``: each image's generator (for
    ``selection``). ``similar``: the pairwise similarity matrix of the given images (needed by
    ``dedup_similarity`` and the complexity selection)."""
    reasons: list[str | None] = list(leaks)
    for i, rule in enumerate(spec.rules):
        p = percentiles.get(i)
        keeps = rule_keeps(rule, scores[rule.score], labels, class_names, p)
        label = rule_label(i, rule, p)
        for j in np.flatnonzero(~keeps):
            reasons[j] = reasons[j] or label
    alive = np.array([r is None for r in reasons], dtype=bool)
    if spec.dedup_similarity is not None:
        assert similar is not None
        for k in np.unique(labels):
            idx = np.flatnonzero(alive & (labels == k))
            unique = idx[greedy_unique(similar(idx), spec.dedup_similarity)]
            for j in np.setdiff1d(idx, unique):
                reasons[j] = "duplicate"
    alive = np.array([r is None for r in reasons], dtype=bool)
    if spec.target_per_class is not None:
        gens = members if members is not None else np.zeros(len(labels), dtype=object)
        for k in np.unique(labels):
            idx = np.flatnonzero(alive & (labels == k))
            keep = select_class(
                spec.selection,
                idx,
                spec.target_per_class,
                scores[spec.rank_by],
                gens,
                spec.temperature,
                scores.get("typicality"),
                similar,
            )
            for j in np.setdiff1d(idx, keep):
                reasons[j] = f"selection:{spec.selection}"
    kept = np.array([r is None for r in reasons], dtype=bool)
    return kept, reasons


def check_minimum(
    spec: CurateSpec, kept: np.ndarray, labels: np.ndarray, scores: Scores, names: list[str]
) -> None:
    """One line naming the first class left with fewer than ``min_per_class`` images."""
    for k, name in enumerate(names):
        mine = labels == k
        if not mine.any() or int(kept[mine].sum()) >= spec.min_per_class:
            continue
        best = ", ".join(f"{s} {float(v[mine].max()):.3g}" for s, v in scores.items())
        raise SynthsetError(
            f"curate.rules keep {int(kept[mine].sum())} images of class {name!r} "
            f"(min_per_class {spec.min_per_class}; its best scores: {best or 'none'}); "
            "loosen the rules or generate more"
        )
