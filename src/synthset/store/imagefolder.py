"""Synthetic images as an ImageFolder: ``images/<class folder>/<item_id>.<ext>`` plus a
``metadata.jsonl`` that ``datasets.load_dataset("imagefolder", data_dir=...)`` reads."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from synthset.plan import WorkItem
from synthset.store.atomic import atomic_write_bytes, write_jsonl

EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


def image_relpath(item: WorkItem, image_format: str) -> str:
    """The image's path relative to the images folder (always forward slashes)."""
    return f"{item.folder}/{item.item_id}{EXTENSIONS[image_format]}"


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
            # atomic_write names temp files ".<final name>.<random>.tmp"
            final = tmp.name[1:].rsplit(".", 2)[0]
            if final in names:
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


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
        }
        for e in entries
    ]
    path = images_dir / "metadata.jsonl"
    write_jsonl(path, rows)
    return path
