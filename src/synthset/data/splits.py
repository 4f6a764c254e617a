"""Real data splits: lists of (image path, label) for train / val / test, saved as JSON."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

from synthset.classes import ClassResolver
from synthset.errors import SynthsetError
from synthset.store.atomic import atomic_write_json

Samples = list[tuple[Path, int]]
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def save_splits(path: Path, splits: dict[str, Samples]) -> None:
    """Write the split table; paths are stored as given (absolute or relative to ``path``)."""
    rows = {}
    for name, samples in splits.items():
        rows[name] = [[_rel(p, path.parent), int(lbl)] for p, lbl in samples]
    atomic_write_json(path, rows)


def load_splits(path: Path, names: tuple[str, ...] | None = None) -> dict[str, Samples]:
    """Read the split table written by :func:`save_splits` (only the ``names`` splits if given;
    the others are dropped unread, e.g. tuning never sees the test split)."""
    if not path.exists():
        raise SynthsetError(f"no real data splits at {path}: run 'synthset data' first")
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {
        name: [(_abs(p, path.parent), int(lbl)) for p, lbl in rows]
        for name, rows in raw.items()
        if names is None or name in names
    }


def class_folders(root: Path, what: str) -> list[Path]:
    """The sub-folders of ``root`` (its class folders), sorted."""
    if not root.is_dir():
        raise SynthsetError(f"{what}: {root} is not a folder")
    return sorted(p for p in root.iterdir() if p.is_dir())


def scan_imagefolder(
    root: Path, classes: ClassResolver, what: str, listing: Collection[str] = ()
) -> Samples:
    """(path, label) for every image in ``root/<class folder>/``; folders are matched to classes
    by :class:`ClassResolver`, together with ``listing`` (the folder names of sibling splits,
    so that train/ and test/ are read the same way)."""
    subs = class_folders(root, what)
    labels = classes.resolve([*listing, *(s.name for s in subs)], what)
    samples: Samples = []
    for sub in subs:
        if sub.name not in labels:
            raise SynthsetError(
                f"{what}: folder {sub.name!r} in {root} is not one of the recipe's classes "
                f"({classes.choices()}); rename it or add the class"
            )
        files = sorted(f for f in sub.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        samples += [(f, labels[sub.name]) for f in files]
    if not samples:
        raise SynthsetError(f"{what}: no images found under {root}/<class>/")
    return samples


def _rel(p: Path, base: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(Path(p).resolve())


def _abs(p: str, base: Path) -> Path:
    path = Path(p)
    return path if path.is_absolute() else base / path
