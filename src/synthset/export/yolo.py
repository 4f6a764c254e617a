"""Ultralytics YOLO datasets: ``images/{train,val}/<item>.<ext>`` (hard links), the label file
of each image at the same path under ``labels/`` (one line per object: ``class cx cy w h`` for
detection, ``class x1 y1 x2 y2 ...`` for segmentation, normalised to [0, 1]; an empty file for an
image without objects) and ``data.yaml``. ``ultralytics``' dataset loader and ``YOLO(...).train``
read it as it is. A killed export resumes: finished files with the right size are kept."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from synthset.export.base import (
    ExportItem,
    ExportJob,
    close_folder,
    finished_info,
    link_or_copy,
    open_folder,
)
from synthset.store.atomic import atomic_write_text


def split_of(item_id: str, seed: int, val_fraction: float) -> str:
    """'val' for a seeded, stable ``val_fraction`` of the items, else 'train'."""
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def flat_name(item: ExportItem) -> str:
    """The image's file name inside a flat folder: its item id and extension."""
    return f"{item.item_id}{Path(item.file_name).suffix}"


def yolo_lines(row: dict[str, Any], task: str) -> list[str]:
    """One line per object of a label row, in YOLO's normalised coordinates."""
    w, h = float(row["width"]), float(row["height"])
    lines = []
    for obj in row["objects"]:
        if task == "segment":
            coords = [f"{x / w:.6f} {y / h:.6f}" for x, y in obj["polygon"]]
            if len(coords) < 3:
                continue
            lines.append(f"{obj['class_id']} {' '.join(coords)}")
        else:
            x0, y0, x1, y1 = obj["box"]
            cx, cy, bw, bh = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h
            lines.append(f"{obj['class_id']} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
    return lines


def export_yolo(job: ExportJob, dest: Path) -> dict[str, Any]:
    labels = job.labels_of("yolo")
    spec = job.spec
    fp = job.digest("yolo", spec.yolo_task, spec.val_fraction)
    if open_folder(dest, fp):
        return finished_info(dest)
    counts = {"train": 0, "val": 0}
    objects = 0
    for it in tqdm(job.items, desc="yolo", unit="img", disable=not job.progress):
        split = split_of(it.item_id, job.seed, spec.val_fraction)
        counts[split] += 1
        image = dest / "images" / split / flat_name(it)
        if not (image.exists() and image.stat().st_size == it.path.stat().st_size):
            link_or_copy(it.path, image)
        lines = yolo_lines(labels[it.item_id], spec.yolo_task)
        objects += len(lines)
        atomic_write_text(
            (dest / "labels" / split / flat_name(it)).with_suffix(".txt"),
            "".join(f"{line}\n" for line in lines),
        )
    data = {
        "path": str(dest.resolve()),
        "train": "images/train",
        "val": "images/val" if counts["val"] else "images/train",
        "names": dict(enumerate(job.class_names)),
    }
    atomic_write_text(dest / "data.yaml", yaml.safe_dump(data, sort_keys=False))
    info = {
        "format": "yolo",
        "task": spec.yolo_task,
        "images": len(job.items),
        "train": counts["train"],
        "val": counts["val"],
        "objects": objects,
    }
    close_folder(dest, fp, info)
    return info
