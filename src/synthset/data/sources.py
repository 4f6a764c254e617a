"""Real datasets from libraries (HF datasets, torchvision) turned into the run's ImageFolder.

A source gives its splits as :class:`SourceSplit` (lazy images + integer labels) and, when it
has them, its class names. :func:`materialize_source` maps the labels onto the recipe's classes,
carves missing val / test splits out of train (stratified, fixed seed), and writes every image
once as ``real/<split>/<class folder>/<source split>-<index>.png``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import train_test_split

from synthset.classes import ClassInfo, ClassResolver
from synthset.data.splits import SPLITS, Samples
from synthset.errors import SynthsetError
from synthset.recipe import RealDataSpec
from synthset.store.atomic import atomic_write, atomic_write_text


@dataclass
class SourceSplit:
    """One split of a source dataset: its name there, its labels and a way to read image i."""

    name: str
    labels: list[int]
    image: Callable[[int], Image.Image]


@dataclass
class Source:
    """A dataset's splits (keyed by synthset split: train / val / test) and its class names."""

    splits: dict[str, SourceSplit]
    names: list[str] | None
    what: str  # e.g. "hf dataset data/flowers" for messages


def label_map(source: Source, classes: list[ClassInfo], mode: str) -> dict[int, int]:
    """Source label → recipe class id, by name (matched by :class:`ClassResolver`) or by index
    (``real.labels``)."""
    n_source = 1 + max((max(s.labels, default=-1) for s in source.splits.values()), default=-1)
    if source.names is not None:
        n_source = max(n_source, len(source.names))
    if mode == "index" or (mode == "auto" and source.names is None):
        if n_source > len(classes):
            raise SynthsetError(
                f"real: {source.what} has labels 0..{n_source - 1} but the recipe has "
                f"{len(classes)} classes; list all {n_source} classes in label order"
            )
        return {k: k for k in range(n_source)}
    if source.names is None:
        raise SynthsetError(
            f"real.labels: {source.what} has no class names to match; use real.labels: index"
        )
    lookup = ClassResolver(classes).resolve(source.names, f"real: {source.what}", noun="class")
    missing = [n for n in source.names if n not in lookup]
    if missing:
        raise SynthsetError(
            f"real: class {missing[0]!r} of {source.what} is not one of the recipe's classes "
            f"({', '.join(c.name for c in classes[:5])}{', ...' if len(classes) > 5 else ''}); "
            "name the classes like the dataset, or set real.labels: index to map label k to the "
            "recipe's k-th class"
        )
    return {k: lookup[n] for k, n in enumerate(source.names)}


def _limit(labels: list[int], max_per_class: int | None) -> list[int]:
    """Indices of the first ``max_per_class`` images of each label (all when None)."""
    if max_per_class is None:
        return list(range(len(labels)))
    seen: dict[int, int] = {}
    keep = []
    for i, lbl in enumerate(labels):
        if seen.get(lbl, 0) < max_per_class:
            seen[lbl] = seen.get(lbl, 0) + 1
            keep.append(i)
    return keep


Picks = list[tuple[SourceSplit, int]]


def _carve(picks: Picks, labels: list[int], fraction: float, seed: int, what: str) -> tuple:
    """Split ``picks`` into (kept, carved) with ``fraction`` carved, stratified by label."""
    idx = np.arange(len(picks))
    n_classes = len(set(labels))
    size = max(round(fraction * len(picks)), n_classes)  # at least one image per class
    try:
        keep, carved = train_test_split(
            idx, test_size=size, stratify=np.array(labels), random_state=seed
        )
    except ValueError as exc:
        raise SynthsetError(
            f"real: cannot carve a {what} split out of {len(picks)} train images by class "
            f"({exc}); every class needs several images"
        ) from None
    return [picks[i] for i in np.sort(keep)], [picks[i] for i in np.sort(carved)]


def select_splits(
    source: Source, mapping: dict[int, int], spec: RealDataSpec, seed: int
) -> dict[str, Picks]:
    """Which source image goes to which synthset split (missing val / test carved from train)."""
    chosen: dict[str, Picks] = {}
    for split, part in source.splits.items():
        chosen[split] = [(part, i) for i in _limit(part.labels, spec.max_per_class)]

    def labels_of(picks: Picks) -> list[int]:
        return [mapping[part.labels[i]] for part, i in picks]

    if "test" not in chosen:
        if spec.test_fraction == 0:
            raise SynthsetError(
                f"real: {source.what} has no test split and real.test_fraction is 0; a real test "
                "split is required: set test_fraction > 0 (e.g. 0.25) or map one in real.splits"
            )
        chosen["train"], chosen["test"] = _carve(
            chosen["train"], labels_of(chosen["train"]), spec.test_fraction, seed, "test"
        )
    if "val" not in chosen:
        share = spec.val_fraction / (
            1.0 - (spec.test_fraction if "test" not in source.splits else 0)
        )
        chosen["train"], chosen["val"] = _carve(
            chosen["train"], labels_of(chosen["train"]), min(share, 0.5), seed, "val"
        )
    return chosen


def materialize_source(
    source: Source, spec: RealDataSpec, classes: list[ClassInfo], out_dir: Path, seed: int
) -> dict[str, Samples]:
    """Write the source's images into ``out_dir/<split>/<class folder>/`` and return the splits.
    Images already written (by a killed earlier run of the same spec) are kept."""
    mapping = label_map(source, classes, spec.labels)
    chosen = select_splits(source, mapping, spec, seed)
    _reset_if_changed(out_dir, spec)
    splits: dict[str, Samples] = {}
    for split in SPLITS:
        samples: Samples = []
        for part, i in chosen[split]:
            cls = classes[mapping[part.labels[i]]]
            path = out_dir / split / cls.folder / f"{part.name}-{i:06d}.png"
            if not path.exists():
                img = to_pil(part.image(i), source.what)
                atomic_write(path, lambda fh, img=img: img.save(fh, format="PNG"))
            samples.append((path, cls.id))
        splits[split] = samples
    return splits


def _reset_if_changed(out_dir: Path, spec: RealDataSpec) -> None:
    """Remove images written for another source spec (file names alone cannot tell them apart)."""
    stamp = out_dir / "source.json"
    key = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    if stamp.exists() and json.loads(stamp.read_text()).get("spec") == digest:
        return
    for split in SPLITS:
        shutil.rmtree(out_dir / split, ignore_errors=True)
    atomic_write_text(stamp, json.dumps({"spec": digest}) + "\n")


def to_pil(value: object, what: str) -> Image.Image:
    """A PIL image from what datasets hold: a PIL image, encoded bytes, a path, or an array."""
    import io

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and value.get("bytes"):
        return Image.open(io.BytesIO(value["bytes"]))
    if isinstance(value, dict) and value.get("path"):
        return Image.open(value["path"])
    if hasattr(value, "numpy"):  # a torch tensor
        value = value.numpy()  # type: ignore[union-attr]
    if isinstance(value, np.ndarray | list):
        arr = np.asarray(value)
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = arr.transpose(1, 2, 0)  # CHW → HWC
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
    raise SynthsetError(
        f"real: {what} holds a {type(value).__name__} where an image was expected; "
        "check real.image_column"
    )
