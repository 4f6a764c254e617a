"""Retrieval baseline (``retrieve``): real images for each class taken from an unlabeled pool.

One pass embeds every pool image (cached under ``cache/retrieve``, keyed by the pool's listing and
the matcher) and keeps a small grey thumbnail for the leak check. Each image gets the class it
matches best (CLIP text prompts, or prototypes of a few labelled real images, or a caption naming
exactly one class); per class the best-matching images are walked in order and the first
``k`` that are not near-duplicates of a real val/test image are kept (the curate stage's leak
check: shifted and re-encoded copies are caught). A second pass copies the kept images into
``retrieve/images/<class>/`` as PNG and ``retrieve/retrieved.jsonl`` lists them.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from synthset.classes import ClassInfo
from synthset.curate.similarity import best_match, grey
from synthset.data.images import to_8bit
from synthset.data.pool import iter_pool
from synthset.data.splits import Samples
from synthset.devices import resolve_device
from synthset.errors import SynthsetError
from synthset.evaluate.tensors import infer_format, load_tensors, to_array
from synthset.recipe import EvaluateSpec, RetrieveSpec
from synthset.store.atomic import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from synthset.store.digests import file_digest, inputs_digest
from synthset.store.retrieved import RETRIEVED_FILE, SUMMARY_FILE

CACHE_VERSION = 1


@dataclass
class PoolIndex:
    """Every pool image's key, caption, embedding (``N×d``, or None) and grey thumbnail."""

    keys: list[str]
    captions: list[str | None]
    features: np.ndarray | None
    thumbs: np.ndarray  # uint8 N×S×S


@dataclass
class Matcher:
    """How pool images are compared with classes: ``embed`` turns PIL images into rows,
    ``class_scores`` turns the pool's rows into an ``N×K`` similarity; ``name`` keys the cache."""

    name: str
    embed: Callable[[list[Image.Image]], torch.Tensor] | None
    class_scores: Callable[[PoolIndex], np.ndarray]


# ----------------------------------------------------------------------------- matchers


def clip_matcher(spec: RetrieveSpec, class_names: list[str], device: torch.device) -> Matcher:
    """CLIP image embeddings against the mean embedding of each class's prompt templates."""
    from synthset.scoring.clip_score import ClipScorer

    assert spec.clip_model is not None
    clip = ClipScorer(spec.clip_model, device, field="retrieve.clip_model")

    def class_scores(index: PoolIndex) -> np.ndarray:
        assert index.features is not None
        text = clip.class_embeddings(class_names, spec.templates)
        return (torch.from_numpy(index.features) @ text.T).numpy()

    name = f"clip:{spec.clip_model}:{'|'.join(spec.templates)}"
    return Matcher(name, clip.image_embeddings, class_scores)


def prototype_matcher(
    spec: RetrieveSpec,
    class_names: list[str],
    real: dict[str, Samples],
    evaluate: EvaluateSpec,
    device: torch.device,
    cache_dir: Path,
    progress: bool,
) -> Matcher:
    """Features of an extractor (``classifier``: the CAS classifier trained on real train for
    ``evaluate.fidelity.classifier_epochs``, selected on val); each class's prototype is the
    mean (centred, unit) feature of ``spec.shots`` labelled real train images, chosen with a
    fixed seed."""
    from synthset.data.subsets import stratified_indices
    from synthset.scoring.features import user_extractor

    num_classes = len(class_names)
    if spec.extractor == "classifier":
        from synthset.evaluate.fidelity import real_classifier

        size, channels = infer_format(real.get("train") or [], "real train")
        size, channels = evaluate.image_size or size, evaluate.channels or channels
        stem = "retrieval_classifier"
        field = "retrieve.extractor classifier"
        extractor = real_classifier(
            evaluate, real, num_classes, size, channels, device, cache_dir, progress, field, stem
        )
        name = f"classifier:{file_digest(cache_dir / f'{stem}.safetensors')}"
    else:
        extractor = user_extractor(spec.extractor, spec.weights, spec.extractor_image_size, device)
        size, channels = extractor.image_size, extractor.channels
        name = f"{spec.extractor}:{file_digest(spec.weights) if spec.weights else ''}"

    def run(x: torch.Tensor) -> torch.Tensor:
        return extractor.fn(x.to(device))

    @torch.no_grad()
    def embed(images: list[Image.Image]) -> torch.Tensor:
        batch = torch.from_numpy(np.stack([to_array(im, size, channels) for im in images]))
        return run(batch).flatten(1).float().cpu()

    @torch.no_grad()
    def class_scores(index: PoolIndex) -> np.ndarray:
        assert index.features is not None
        pool = torch.from_numpy(index.features)
        centre = pool.mean(0)  # raw ReLU features all point one way: centre on the pool
        train = load_tensors(real["train"], size, channels, "real train")
        have = torch.bincount(train.labels, minlength=num_classes)
        if int(have.min()) < spec.shots:
            c = int(have.argmin())
            raise SynthsetError(
                f"retrieve.shots: {spec.shots} labelled images per class asked, but class "
                f"{class_names[c]!r} has {int(have[c])} real train images; lower retrieve.shots"
            )
        shots = stratified_indices(
            train.labels, dict.fromkeys(range(num_classes), spec.shots), "retrieve.shots"
        )
        shot_feats = torch.cat(
            [embed_tensor(train.images[shots[i : i + 256]]) for i in range(0, len(shots), 256)]
        )
        shot_unit = _unit(shot_feats - centre)
        labels = train.labels[shots]
        protos = torch.stack([shot_unit[labels == c].mean(0) for c in range(num_classes)])
        return (_unit(pool - centre) @ _unit(protos).T).numpy()

    @torch.no_grad()
    def embed_tensor(images: torch.Tensor) -> torch.Tensor:
        return run(images).flatten(1).float().cpu()

    return Matcher(f"prototypes:{name}:{size}:{channels}", embed, class_scores)


def caption_matcher(classes: list[ClassInfo], synonyms: dict[str, list[str]]) -> Matcher:
    """1 for the one class a caption names (as a whole word, any case), -inf (no match) for the
    others; a caption naming no class or several classes matches none."""
    patterns = [
        re.compile(
            r"\b(" + "|".join(re.escape(w) for w in [c.name, *synonyms.get(c.name, [])]) + r")\b",
            re.IGNORECASE,
        )
        for c in classes
    ]

    def class_scores(index: PoolIndex) -> np.ndarray:
        scores = np.full((len(index.keys), len(classes)), -np.inf, dtype=np.float32)
        for i, caption in enumerate(index.captions):
            hits = [c for c, p in enumerate(patterns) if caption and p.search(caption)]
            if len(hits) == 1:
                scores[i, hits[0]] = 1.0
        return scores

    return Matcher("caption", None, class_scores)


def captioned(ranker: Matcher, captions: Matcher) -> Matcher:
    """``ranker``'s similarity, kept only for the class an image's caption names."""

    def class_scores(index: PoolIndex) -> np.ndarray:
        named = np.isfinite(captions.class_scores(index))
        return np.where(named, ranker.class_scores(index), -np.inf).astype(np.float32)

    return Matcher(ranker.name, ranker.embed, class_scores)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


# ----------------------------------------------------------------------------- the pool index


def index_pool(
    spec: RetrieveSpec, matcher: Matcher, thumb_size: int, cache_dir: Path, progress: bool
) -> PoolIndex:
    """Embed and thumbnail every pool image once; later calls load the cached arrays."""
    key = json.dumps(
        [CACHE_VERSION, inputs_digest([Path(spec.pool)]), matcher.name, thumb_size], default=str
    )
    path = cache_dir / f"pool-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            pairs = zip(data["captions"], data["has_caption"], strict=True)
            captions = [str(c) if has else None for c, has in pairs]
            feats = data["features"] if data["features"].size else None
            return PoolIndex([str(k) for k in data["keys"]], captions, feats, data["thumbs"])
    keys: list[str] = []
    captions: list[str | None] = []
    thumbs: list[np.ndarray] = []
    feats: list[torch.Tensor] = []
    batch: list[Image.Image] = []

    def flush() -> None:
        if batch and matcher.embed is not None:
            feats.append(matcher.embed(batch))
        batch.clear()

    items = iter_pool(spec.pool, spec.image_column, spec.caption_column)
    for item in tqdm(items, desc="retrieve: embed pool", unit="img", disable=not progress):
        keys.append(item.key)
        captions.append(item.caption)
        thumbs.append(to_array(item.image, thumb_size, 1)[0])
        batch.append(item.image)
        if len(batch) >= spec.batch_size:
            flush()
    flush()
    if not keys:
        raise SynthsetError(
            f"retrieve.pool: no images in {spec.pool}; give a folder of images, WebDataset "
            ".tar shards or a folder written by datasets' save_to_disk"
        )
    index = PoolIndex(keys, captions, torch.cat(feats).numpy() if feats else None, np.stack(thumbs))
    arrays = {
        "keys": np.array(keys),
        "captions": np.array([c or "" for c in captions]),
        "has_caption": np.array([c is not None for c in captions]),
        "features": index.features if index.features is not None else np.zeros(0, np.float32),
        "thumbs": index.thumbs,
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))
    return index


# ----------------------------------------------------------------------------- selection


def select(
    scores: np.ndarray,
    thumbs: torch.Tensor,
    eval_thumbs: torch.Tensor,
    counts: dict[int, int],
    leak: Any,
    class_names: list[str],
) -> tuple[dict[int, list[int]], dict[str, int]]:
    """Per class, the first ``counts[c]`` pool rows (by descending similarity) that take class
    ``c`` as their best match (a row of -inf matches no class) and are no leak; and how many
    leaks were skipped."""
    best, score = scores.argmax(1), scores.max(1)
    shift = round(leak.max_shift * thumbs.shape[-1])
    leaks_skipped = 0
    chosen: dict[int, list[int]] = {}
    for c, k in counts.items():
        mine = np.flatnonzero((best == c) & np.isfinite(score))
        order = mine[np.argsort(-score[mine], kind="stable")]
        kept: list[int] = []
        for start in range(0, len(order), max(4 * k, 256)):
            block = order[start : start + max(4 * k, 256)]
            if len(eval_thumbs):
                sim, _ = best_match(thumbs[block], eval_thumbs, shift)
                clean = block[(sim < leak.similarity).numpy()]
            else:
                clean = block
            leaks_skipped += len(block) - len(clean)
            kept += clean[: k - len(kept)].tolist()
            if len(kept) == k:
                break
        if len(kept) < k:
            raise SynthsetError(
                f"retrieve: class {class_names[c]!r} has {len(kept)} clean pool images that "
                f"match it best, {k} asked; add images to retrieve.pool or lower "
                "retrieve.per_class"
            )
        chosen[c] = kept
    return chosen, {"leaks_skipped": leaks_skipped}


def retrieve(
    spec: RetrieveSpec,
    classes: list[ClassInfo],
    real: dict[str, Samples],
    counts: dict[int, int],
    out_dir: Path,
    cache_dir: Path,
    evaluate: EvaluateSpec,
    synonyms: dict[str, list[str]] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Retrieve ``counts[c]`` pool images for every class ``c``; write them, the table and the
    summary under ``out_dir``; return the summary."""
    names = [c.name for c in classes]
    device = resolve_device(spec.device)
    size, _ = infer_format(real.get("train") or real.get("val") or [], "real train")
    thumb_size = spec.leak_check.size or min(evaluate.image_size or size, 32)
    start = time.perf_counter()
    if spec.by in ("clip", "clip+caption"):
        matcher = clip_matcher(spec, names, device)
    elif spec.by == "prototypes":
        matcher = prototype_matcher(spec, names, real, evaluate, device, cache_dir, progress)
    else:
        matcher = caption_matcher(classes, synonyms or {})
    if spec.by == "clip+caption":
        matcher = captioned(matcher, caption_matcher(classes, synonyms or {}))
    index = index_pool(spec, matcher, thumb_size, cache_dir, progress)
    embed_seconds = time.perf_counter() - start
    total = sum(counts.values())
    if total > len(index.keys):
        raise SynthsetError(
            f"retrieve: {total} images asked but the pool holds {len(index.keys)}; add images "
            "to retrieve.pool or lower retrieve.per_class"
        )
    if "caption" in spec.by and not any(index.captions):
        raise SynthsetError(
            f"retrieve.by {spec.by}: no image in {spec.pool} has a caption (a .txt beside it, a "
            "txt entry in its shard or retrieve.caption_column); use by: clip or prototypes"
        )
    scores = matcher.class_scores(index)
    eval_splits = [s for s in spec.leak_check.splits if real.get(s)]
    eval_thumbs = torch.cat(
        [grey(load_tensors(real[s], thumb_size, 1, f"real {s}").images) for s in eval_splits]
        or [torch.empty(0, thumb_size, thumb_size)]
    )
    chosen, leaks = select(
        scores,
        grey(torch.from_numpy(index.thumbs)[:, None]),
        eval_thumbs,
        counts,
        spec.leak_check,
        names,
    )
    rows = _write_images(spec, classes, index, scores, chosen, out_dir, progress)
    summary = {
        "pool": str(spec.pool),
        "by": spec.by,
        "pool_images": len(index.keys),
        "retrieved": len(rows),
        "per_class": {names[c]: len(v) for c, v in chosen.items()},
        "mean_similarity": {
            names[c]: float(scores[v, c].mean()) if v else None for c, v in chosen.items()
        },
        "matched_per_class": {
            names[c]: int(((scores.argmax(1) == c) & np.isfinite(scores.max(1))).sum())
            for c in range(len(names))
        },
        **leaks,
        "leak_splits": eval_splits,
        "embed_seconds": round(embed_seconds, 3),
    }
    atomic_write_json(out_dir / SUMMARY_FILE, summary)
    return summary


def _write_images(
    spec: RetrieveSpec,
    classes: list[ClassInfo],
    index: PoolIndex,
    scores: np.ndarray,
    chosen: dict[int, list[int]],
    out_dir: Path,
    progress: bool,
) -> list[dict[str, Any]]:
    """Copy the chosen pool images as PNG and write ``retrieved.jsonl`` (written last)."""
    where = {
        index.keys[i]: (c, rank, i) for c, picked in chosen.items() for rank, i in enumerate(picked)
    }
    shutil.rmtree(out_dir / "images", ignore_errors=True)  # the images of an earlier retrieval
    rows: list[dict[str, Any]] = []
    items = iter_pool(spec.pool, spec.image_column, spec.caption_column, only=set(where))
    for item in tqdm(items, total=len(where), desc="retrieve: copy", disable=not progress):
        c, rank, i = where[item.key]
        rel = f"images/{classes[c].folder}/{rank:06d}.png"
        atomic_write_bytes(out_dir / rel, _png(to_8bit(item.image)))
        rows.append(
            {
                "path": rel,
                "label": c,
                "class_name": classes[c].name,
                "rank": rank,
                "pool_key": item.key,
                "similarity": float(scores[i, c]),
                "caption": item.caption,
            }
        )
    if len(rows) != len(where):
        raise SynthsetError(
            f"retrieve.pool: {len(where) - len(rows)} chosen images vanished from {spec.pool} "
            "while retrieving; rerun 'synthset retrieve'"
        )
    rows.sort(key=lambda r: (r["label"], r["rank"]))
    atomic_write_text(out_dir / RETRIEVED_FILE, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
