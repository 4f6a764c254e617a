"""Synthetic images as an ImageFolder: ``images/<class folder>/<item_id>.<ext>`` plus a
``metadata.jsonl`` that ``datasets.load_dataset("imagefolder", data_dir=...)`` reads."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image

from synthset.errors import SynthsetError
from synthset.store.atomic import atomic_write_bytes, read_jsonl, temp_target, write_jsonl

METADATA = "metadata.jsonl"

log = logging.getLogger(__name__)


def encode_image(image: Image.Image, image_format: str, quality: int = 95) -> bytes:
    """Encode deterministically (no timestamps), so equal pixels give equal bytes."""
    buf = io.BytesIO()
    if image_format == "png":
        image.save(buf, format="PNG", optimize=False)
    elif image_format == "jpeg":
        rgb = image if image.mode in ("L", "RGB") else image.convert("RGB")
        rgb.save(buf, format="JPEG", quality=quality)
    else:
        image.save(buf, format="WEBP", quality=quality)
    return buf.getvalue()


def write_image(images_dir: Path, relpath: str, data: bytes) -> Path:
    """Place one encoded image atomically."""
    path = images_dir / relpath
    atomic_write_bytes(path, data)
    return path


def side_path(run_root: Path, folder: str, relpath: str, suffix: str) -> Path:
    """Where a side file of the image at ``relpath`` (under ``images/``) lives: the same
    relative path under ``<run_root>/<folder>/``, with ``suffix`` for the image's extension."""
    return run_root / folder / Path(relpath).with_suffix(suffix)


def remove_stale_temp_files(images_dir: Path, relpaths: list[str]) -> int:
    """Delete temp files a killed writer left for these images (only these: other shards may be
    writing their own at this moment). Returns how many were removed."""
    by_folder: dict[Path, set[str]] = {}
    for rel in relpaths:
        path = images_dir / rel
        by_folder.setdefault(path.parent, set()).add(path.name)
    removed = 0
    for folder, names in by_folder.items():
        if not folder.is_dir():
            continue
        for tmp in folder.glob(".*.tmp"):
            if temp_target(tmp) in names:
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


#: Manifest fields naming an image's real source, copied into ``metadata.jsonl`` when present.
SOURCE_KEYS = ("image", "strength", "source_image", "partner_image", "lambda")


def write_metadata(images_dir: Path, entries: list[dict[str, Any]]) -> Path:
    """Write ``metadata.jsonl`` (plan order) with an integer ``label`` per image."""
    rows = [
        {
            "file_name": e["file_name"],
            "label": e["class_id"],
            "class_name": e["class_name"],
            "prompt": e["prompt"],
            "seed": e["seed"],
            "item_id": e["item_id"],
            "generator": e.get("generator", ""),
            # the settings the image was made with: the index changes when an image does
            "config": e.get("config", ""),
            # where an image comes from when a real image is its source (img2img, inversion)
            **{k: e[k] for k in SOURCE_KEYS if k in e},
        }
        for e in entries
    ]
    path = images_dir / METADATA
    write_jsonl(path, rows)
    return path


def set_aside_unlisted(images_dir: Path, keep: set[str], stale_root: Path) -> int:
    """Make ``images_dir`` hold exactly the files ``keep`` lists (relative paths) plus the index:
    move every other file (images of an older format or plan, temp files of killed writers,
    anything a user put there) to ``stale_root/<UTC time>/<images_dir name>/<same relative
    path>``, never deleting it, then remove the folders left empty. Logs one line when files
    moved; returns how many. Call it only while no writer runs (``store.locks.no_writers``)."""
    unlisted: list[str] = []
    for dirpath, dirnames, filenames in os.walk(images_dir):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in [*filenames, *links]:
            rel = Path(dirpath, name).relative_to(images_dir).as_posix()
            if rel != METADATA and rel not in keep:
                unlisted.append(rel)
    moved_to = None
    if unlisted:
        moved_to = _dated_folder(stale_root) / images_dir.name
        for rel in sorted(unlisted):
            target = moved_to / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(images_dir / rel, target)
    for dirpath, _, _ in os.walk(images_dir, topdown=False):
        if Path(dirpath) != images_dir and not os.path.islink(dirpath):
            with contextlib.suppress(OSError):  # only empty folders go
                os.rmdir(dirpath)
    if moved_to is not None:
        log.warning(
            "%s: moved %d files the index does not list to %s",
            images_dir,
            len(unlisted),
            moved_to,
        )
    return len(unlisted)


def _dated_folder(stale_root: Path) -> Path:
    """A new ``stale_root/<UTC time>`` (``-2``, ``-3``, ... when one already has that name)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    stale_root.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        folder = stale_root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            n += 1


# ----------------------------------------------------------------------------- the one reader


def read_rows(images_dir: Path) -> list[dict[str, Any]]:
    """Every row of ``metadata.jsonl`` with its absolute ``path`` and integer ``label``: the one
    reader of a synthetic set's index, which every consumer goes through. A missing index is a
    one-line error; so is a row without ``file_name`` or an integer ``label``."""
    images_dir = Path(images_dir)
    meta = images_dir / METADATA
    if not meta.exists():
        raise SynthsetError(
            f"no finished synthetic dataset in {images_dir} (no {METADATA}): run "
            "'synthset generate' until the plan is complete"
        )
    try:
        return [
            r | {"path": images_dir / r["file_name"], "label": int(r["label"])}
            for r in read_jsonl(meta)
        ]
    except (KeyError, TypeError, ValueError):
        raise SynthsetError(f"{meta}: every row needs 'file_name' and an integer 'label'") from None


def read_samples(images_dir: Path) -> list[tuple[Path, int]]:
    """``(path, label)`` of every image in the synthetic set's index."""
    return [(r["path"], r["label"]) for r in read_rows(images_dir)]


def read_prompts(images_dir: Path) -> dict[str, str] | None:
    """``str(path) -> prompt`` from the index (None without an index or without prompts)."""
    if not (Path(images_dir) / METADATA).exists():
        return None
    found = {str(r["path"]): str(r["prompt"]) for r in read_rows(images_dir) if r.get("prompt")}
    return found or None
