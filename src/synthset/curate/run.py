"""The curate stage: score every synthetic image (cached per scorer), find leaks of the real
evaluation splits, choose 'auto' percentiles on the real val split, apply the rules, and write
the view (``curate/kept.jsonl``) and its summary (``curate/curate.json``)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthset.classes import read_classes
from synthset.curate.base import ScoringContext
from synthset.curate.compare import best_code_match, code_similarity, codes_of
from synthset.curate.registry import SCORERS
from synthset.curate.rules import Scores, check_minimum, decide, rule_label
from synthset.curate.similarity import best_match, grey, pairwise
from synthset.data.splits import Samples
from synthset.evaluate.tensors import load_tensors
from synthset.recipe import CurateSpec, EvaluateSpec, Recipe
from synthset.store.atomic import atomic_write_json, read_jsonl, write_jsonl
from synthset.store.curated import KEPT_FILE, SUMMARY_FILE
from synthset.store.digests import inputs_digest
from synthset.store.imagefolder import read_rows
from synthset.store.run_folder import RunFolder

log = logging.getLogger(__name__)

SCORES_FILE = "scores.jsonl"
SCORES_META = "scores.json"


def effective_spec(recipe: Recipe) -> CurateSpec:
    """The curate section, with ``target_per_class`` defaulting to ``images_per_class`` when
    the plan over-generates."""
    spec, gen = recipe.curate, recipe.generate
    assert spec is not None and gen is not None
    if spec.target_per_class is None and gen.overgenerate > 1:  # keep the planned count's best
        spec = spec.model_copy(update={"target_per_class": gen.images_per_class})
    return spec


def scoring_context(
    recipe: Recipe, run: RunFolder, rows: list[dict[str, Any]], progress: bool
) -> ScoringContext:
    """What the scorers need for ``rows``, against ``run``'s real train/val split; the
    reference classifier is kept in ``run``'s curate folder."""
    from synthset.data.splits import load_splits
    from synthset.data.subsets import subset_samples
    from synthset.devices import resolve_device

    spec = effective_spec(recipe)
    run.curate.mkdir(parents=True, exist_ok=True)
    class_names = [c.name for c in read_classes(run.classes)]
    real = load_splits(run.real / "splits.json", names=("train", "val"))
    subset = recipe.adapt.real_subset if recipe.adapt is not None else None
    real["train"] = subset_samples(real["train"], subset, len(class_names))
    return ScoringContext(
        spec=spec,
        synthetic=rows,
        real=real,
        class_names=class_names,
        cache_dir=run.curate,
        tensor_cache=run.cache / "tensors",
        device=resolve_device(spec.device),
        seed=recipe.seed,
        progress=progress,
        evaluate=recipe.evaluate or EvaluateSpec(),
        real_subset=subset if subset is not None and subset < 1 else None,
    )


@dataclass
class Selection:
    """What curation decided for a set of rows."""

    kept: np.ndarray
    reasons: list[str | None]
    scores: Scores
    leaks: list[dict[str, Any]]
    auto: dict[int, dict[str, Any]]
    timing: dict[str, float]


def select(
    ctx: ScoringContext,
    cache: ScoreCache,
    splits_file: Path,
    leak_splits: list[str],
    fixed: dict[int, float] | None = None,
) -> Selection:
    """Score ``ctx.synthetic`` (cached), find leaks of ``leak_splits``, choose the 'auto'
    percentiles on real val (or take them from ``fixed``), apply the rules."""
    spec = ctx.spec
    scores: Scores = {}
    timing: dict[str, float] = {}
    for name in spec.scorers:
        scorer = SCORERS.load(name)(spec)
        settings = {**scorer.settings(), "format": list(ctx.image_format)}
        if scorer.uses_reference:
            settings["reference"] = ctx.reference_settings()
        column, seconds = cache.column(name, settings, scorer, ctx)
        scores[name] = column
        timing[name] = seconds
    if ctx.reference_seconds:
        timing["reference_classifier"] = ctx.reference_seconds
    leaks, matches, timing["leak_check"] = find_leaks(ctx, cache, splits_file, leak_splits)
    rows = ctx.synthetic
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    members = np.array([str(r.get("generator", "")) for r in rows], dtype=object)
    similar = _similarity(ctx)
    if fixed is None:
        auto = choose_percentiles(spec, ctx, scores, labels, leaks, members, similar)
        percentiles = {i: a["chosen"] for i, a in auto.items()}
    else:
        auto, percentiles = {}, fixed
    kept, reasons = decide(
        spec, scores, labels, ctx.class_names, leaks, percentiles, members, similar
    )
    check_minimum(spec, kept, labels, scores, ctx.class_names)
    return Selection(kept, reasons, scores, matches, auto, timing)


def curate_images(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any]:
    """Run the stage; returns what its marker records."""
    rows = read_rows(run.images)
    ctx = scoring_context(recipe, run, rows, progress)
    spec, out = ctx.spec, run.curate
    data_digest = inputs_digest([run.images / "metadata.jsonl", run.real / "splits.json"])
    cache = ScoreCache(out, [r["item_id"] for r in rows], data_digest)
    sel = select(ctx, cache, run.real / "splits.json", list(spec.leak_check.splits))
    view = write_view(out, rows, sel)
    summary = _summary(spec, ctx, view, sel.leaks, sel.auto, sel.timing, len(rows))
    atomic_write_json(out / SUMMARY_FILE, summary)
    log.info("curate: kept %d of %d images", summary["kept"], summary["images"])
    return {"kept": summary["kept"], "images": summary["images"], "leaks": summary["leaks"]}


def curate_trial(
    recipe: Recipe, run: RunFolder, trial_dir: Path, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The rows of a tune trial's images that the recipe's curation keeps: scored like the
    run's (the run's reference classifier, scores cached in ``trial_dir/curate``), the fixed
    rules, dedup and selection, leaks of real val only (tuning never reads test). 'auto'
    percentiles count as 0 here: choosing one takes proxies of its own per trial."""
    ctx = scoring_context(recipe, run, rows, progress=False)
    fixed = {i: 0.0 for i, r in enumerate(ctx.spec.rules) if r.percentile == "auto"}
    folder = trial_dir / "curate"
    folder.mkdir(parents=True, exist_ok=True)
    digest = inputs_digest([trial_dir / "images" / "metadata.jsonl", run.real / "splits.json"])
    cache = ScoreCache(folder, [r["item_id"] for r in rows], digest)
    leak_splits = [s for s in ctx.spec.leak_check.splits if s == "val"]
    sel = select(ctx, cache, run.real / "splits.json", leak_splits, fixed)
    write_view(folder, rows, sel)
    return [r for r, k in zip(rows, sel.kept, strict=True) if k]


def write_view(folder: Path, rows: list[dict[str, Any]], sel: Selection) -> list[dict[str, Any]]:
    """``folder/kept.jsonl``: every row with kept, reason and scores; returns the rows."""
    view = [
        {
            "item_id": r["item_id"],
            "file_name": r["file_name"],
            "label": r["label"],
            "kept": bool(k),
            "reason": why,
            **{s: round(float(v[i]), 6) for s, v in sel.scores.items()},
        }
        for i, (r, k, why) in enumerate(zip(rows, sel.kept, sel.reasons, strict=True))
    ]
    write_jsonl(folder / KEPT_FILE, view)
    return view


# ----------------------------------------------------------------------------- score cache


class ScoreCache:
    """Score columns kept in ``scores.jsonl`` (keyed by item id), each with the fingerprint of
    what it was computed from (``scores.json``): a column is recomputed only when its scorer's
    settings, the synthetic index or the real splits change."""

    def __init__(self, folder: Path, item_ids: list[str], data_digest: str) -> None:
        self.folder, self.item_ids, self.data_digest = folder, item_ids, data_digest
        meta_path = folder / SCORES_META
        self.meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        table = {r["item_id"]: r for r in read_jsonl(folder / SCORES_FILE)}
        self.table = [table.get(i, {"item_id": i}) for i in item_ids]

    def _fingerprint(self, name: str, settings: dict[str, Any]) -> str:
        blob = json.dumps([name, settings, self.data_digest], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def get(self, name: str, settings: dict[str, Any], columns: list[str]) -> list[list] | None:
        """The cached columns (None when stale or incomplete)."""
        entry = self.meta.get(name, {})
        if entry.get("fp") != self._fingerprint(name, settings):
            return None
        if not all(c in row for row in self.table for c in columns):
            return None
        return [[row[c] for row in self.table] for c in columns]

    def put(
        self, name: str, settings: dict[str, Any], values: dict[str, list], seconds: float
    ) -> None:
        """Store columns and their fingerprint (table first, then the fingerprint)."""
        for c, column in values.items():
            for row, v in zip(self.table, column, strict=True):
                row[c] = v
        write_jsonl(self.folder / SCORES_FILE, self.table)
        fp = self._fingerprint(name, settings)
        self.meta[name] = {"fp": fp, "seconds": round(seconds, 3), "columns": list(values)}
        atomic_write_json(self.folder / SCORES_META, self.meta)

    def column(
        self, name: str, settings: dict[str, Any], scorer: Any, ctx: ScoringContext
    ) -> tuple[np.ndarray, float]:
        """A scorer's column (cached or computed now) and the seconds it took to compute."""
        found = self.get(name, settings, [name])
        if found is not None:
            return np.asarray(found[0], dtype=np.float64), self.meta[name]["seconds"]
        start, before = time.perf_counter(), ctx.reference_seconds
        values = np.asarray(scorer.score(ctx), dtype=np.float64)
        # the reference classifier's training is timed on its own, not as this scorer's
        seconds = time.perf_counter() - start - (ctx.reference_seconds - before)
        if values.shape != (len(self.item_ids),) or not np.isfinite(values).all():
            raise RuntimeError(f"scorer {name} returned {values.shape} or non-finite scores")
        self.put(name, settings, {name: values.tolist()}, seconds)
        return values, round(seconds, 3)


# ----------------------------------------------------------------------------- leaks, dedup


def _compare_size(ctx: ScoringContext) -> int:
    """The side images are compared at (``leak_check.size``, else the evaluation size up to 32)."""
    return ctx.spec.leak_check.size or min(ctx.image_format[0], 32)


def _shift_pixels(ctx: ScoringContext) -> int:
    return round(ctx.spec.leak_check.max_shift * _compare_size(ctx))


def _grey(samples: Samples, ctx: ScoringContext, what: str) -> torch.Tensor:
    size = _compare_size(ctx)
    return grey(load_tensors(samples, size, 1, what, ctx.tensor_cache).images)


def _comparable(samples: Samples, ctx: ScoringContext, what: str) -> torch.Tensor:
    """Grey images (pixels) or codes (phash, features) to compare ``samples`` by."""
    if ctx.spec.compare_by == "pixels":
        return _grey(samples, ctx, what)
    return codes_of(ctx, samples, what)


def _best(
    queries: torch.Tensor, refs: torch.Tensor, ctx: ScoringContext
) -> tuple[torch.Tensor, torch.Tensor]:
    if ctx.spec.compare_by == "pixels":
        return best_match(queries, refs, _shift_pixels(ctx))
    return best_code_match(queries, refs)


def find_leaks(
    ctx: ScoringContext, cache: ScoreCache, splits_file: Path, leak_splits: list[str]
) -> tuple[list[str | None], list[dict[str, Any]], float]:
    """Each image's leak reason (``leak:<split>``, None when clean), the leaks found (item id,
    split, matched real file, similarity) and the seconds the check took. The real splits
    ``leak_splits`` are read here, and only their images' pixels."""
    from synthset.data.splits import load_splits

    lc = ctx.spec.leak_check
    n = len(ctx.synthetic)
    if not leak_splits:
        return [None] * n, [], 0.0
    settings = {"size": _compare_size(ctx), "shift": _shift_pixels(ctx), "splits": leak_splits}
    if ctx.spec.compare_by != "pixels":  # (pixel caches keep their key)
        settings = {"compare_by": ctx.spec.compare_by, "splits": leak_splits}
    if ctx.spec.compare_by == "features":  # the reference classifier's features
        settings["reference"] = ctx.reference_settings()
    cols = ["leak_similarity", "leak_split", "leak_index"]
    found = cache.get("leak_check", settings, cols)
    start = time.perf_counter()
    splits = load_splits(splits_file, names=tuple(leak_splits))
    if found is None:
        queries = _comparable(ctx.samples, ctx, "synthetic")
        best = torch.zeros(n)
        split_of: list[str | None] = [None] * n
        index = torch.full((n,), -1, dtype=torch.int64)
        for split in leak_splits:
            if not splits.get(split):
                continue
            refs = _comparable(splits[split], ctx, f"real {split}")
            sim, idx = _best(queries, refs, ctx)
            for j in np.flatnonzero((sim > best).numpy()):
                best[j], index[j], split_of[j] = sim[j], idx[j], split
        found = [[round(float(v), 6) for v in best], split_of, index.tolist()]
        cache.put("leak_check", settings, dict(zip(cols, found, strict=True)), 0.0)
    seconds = time.perf_counter() - start
    sims, split_of, index = found
    reasons: list[str | None] = [None] * n
    matches = []
    for j in range(n):
        if split_of[j] is not None and sims[j] >= lc.similarity:
            reasons[j] = f"leak:{split_of[j]}"
            real_path = Path(splits[split_of[j]][index[j]][0])
            matches.append(
                {
                    "item_id": ctx.synthetic[j]["item_id"],
                    "split": split_of[j],
                    "real_image": real_path.name,
                    "similarity": sims[j],
                }
            )
    return reasons, matches, round(seconds, 3)


def _similarity(ctx: ScoringContext) -> Callable[[np.ndarray], np.ndarray]:
    """Pairwise similarities of the given synthetic images (all of one class). Each class's
    whole matrix is computed once, on first use, and every later call (each 'auto' candidate,
    dedup, selection) takes its rows and columns from it."""
    if ctx.spec.compare_by != "pixels":
        return code_similarity(codes_of(ctx, ctx.samples, "synthetic"))
    labels = np.array([r["label"] for r in ctx.synthetic], dtype=np.int64)
    images: list[torch.Tensor] = []
    by_class: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def similar(idx: np.ndarray) -> np.ndarray:
        if len(idx) == 0:
            return np.zeros((0, 0))
        k = int(labels[idx[0]])
        if k not in by_class:
            if not images:
                images.append(_grey(ctx.samples, ctx, "synthetic"))
            members = np.flatnonzero(labels == k)
            sim = pairwise(images[0][torch.as_tensor(members)], _shift_pixels(ctx)).numpy()
            by_class[k] = (members, sim)
        members, sim = by_class[k]
        assert (labels[idx] == k).all(), "similar() takes the images of one class"
        pos = np.searchsorted(members, idx)
        return sim[np.ix_(pos, pos)]

    return similar


# ----------------------------------------------------------------------------- auto percentile


def choose_percentiles(
    spec: CurateSpec,
    ctx: ScoringContext,
    scores: Scores,
    labels: np.ndarray,
    leaks: list[str | None],
    members: np.ndarray,
    similar: Callable[[np.ndarray], np.ndarray],
) -> dict[int, dict[str, Any]]:
    """For each ``percentile: auto`` rule, in order: the candidate whose kept set trains the
    proxy classifier to the best real-val accuracy (ties: the smaller percentile). Later 'auto'
    rules are tried at 0 while an earlier one is chosen. The test split is never read."""
    autos = [i for i, r in enumerate(spec.rules) if r.percentile == "auto"]
    chosen: dict[int, dict[str, Any]] = {}
    if not autos:
        return chosen
    val = ctx.real_tensors("val")
    for i in autos:
        trials: dict[str, float] = {}
        for p in spec.rules[i].auto_percentiles:
            fixed = {j: 0.0 for j in autos} | {j: c["chosen"] for j, c in chosen.items()}
            tried = fixed | {i: p}
            kept, _ = decide(spec, scores, labels, ctx.class_names, leaks, tried, members, similar)
            trials[f"{p:g}"] = _proxy_accuracy(ctx, kept, val)
        best = max(trials.items(), key=lambda kv: (kv[1], -float(kv[0])))
        chosen[i] = {
            "rule": rule_label(i, spec.rules[i], float(best[0])),
            "chosen": float(best[0]),
            "val_accuracy": trials,
            "proxy_train_set": spec.proxy_train_set,
        }
        log.info("curate: %s chosen on real val (%s)", chosen[i]["rule"], trials)
    return chosen


def _proxy_accuracy(ctx: ScoringContext, kept: np.ndarray, val: Any) -> float:
    """Best real-val accuracy of a short classifier trained on the kept synthetic images (with
    ``curate.proxy_train_set: real+synthetic``, mixed with the real train split as evaluate
    mixes them)."""
    from synthset.devices import cpu_threads
    from synthset.evaluate.classifiers import build_classifier
    from synthset.evaluate.tensors import TensorSet
    from synthset.evaluate.train import TrainData, train_classifier

    data = ctx.synthetic_tensors
    idx = torch.as_tensor(np.flatnonzero(kept))
    if len(idx) < 2:
        return 0.0
    kept_set = TensorSet(data.images[idx], data.labels[idx])
    if ctx.spec.proxy_train_set == "real+synthetic":
        real = ctx.real_tensors("train")
        train = TrainData(
            real, kept_set, ctx.evaluate.real_batch_fraction, ctx.evaluate.mixed_epoch
        )
    else:
        train = TrainData(kept_set)
    size, channels = ctx.image_format
    spec = ctx.reference_spec().model_copy(update={"epochs": ctx.spec.proxy_epochs})
    torch.manual_seed(ctx.seed)
    model = build_classifier(spec.classifier, len(ctx.class_names), channels, size)
    with cpu_threads(ctx.device, size), torch.enable_grad():
        result = train_classifier(
            model, train, val, spec, ctx.seed, ctx.device, progress=False, desc="curate proxy"
        )
    return round(result.best_val_accuracy, 6)


# ----------------------------------------------------------------------------- summary


def _reason_kind(reason: str) -> str:
    """A reason without its value: ``rule1:typicality:percentile=20`` → ``rule1:typicality``."""
    return ":".join(reason.split(":")[:2])


def _summary(
    spec: CurateSpec,
    ctx: ScoringContext,
    view: list[dict[str, Any]],
    leaks: list[dict[str, Any]],
    auto: dict[int, dict[str, Any]],
    timing: dict[str, float],
    n: int,
) -> dict[str, Any]:
    per_class: dict[str, Any] = {}
    for k, name in enumerate(ctx.class_names):
        mine = [r for r in view if r["label"] == k]
        reasons = Counter(_reason_kind(r["reason"]) for r in mine if not r["kept"])
        per_class[name] = {
            "images": len(mine),
            "kept": sum(r["kept"] for r in mine),
            "dropped": dict(sorted(reasons.items())),
        }
    dropped = Counter(r["reason"] for r in view if not r["kept"])
    return {
        "images": n,
        "kept": sum(r["kept"] for r in view),
        "kept_fraction": round(sum(r["kept"] for r in view) / max(1, n), 6),
        "leaks": len(leaks),
        "leak_matches": leaks,
        "dropped_by_reason": dict(sorted(dropped.items())),
        "per_class": per_class,
        "auto": {str(i): a for i, a in auto.items()},
        "scorers": spec.scorers,
        # the real train images the reference and the proxies learned from (adapt.real_subset)
        "real_train_images": len(ctx.real["train"]),
        "real_subset": ctx.real_subset,
        "seconds_per_1000_images": {k: round(1000 * v / max(1, n), 3) for k, v in timing.items()},
    }
