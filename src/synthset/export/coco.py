"""COCO: ``images/<item>.<ext>`` (hard links) and ``annotations.json`` with one annotation per
object: ``bbox`` [x, y, w, h], ``area``, and ``segmentation`` as polygons or as RLE of the
labels stage's mask (``export.coco_segmentation``). Category ids are class ids + 1 (COCO's ids
start at 1). ``pycocotools.coco.COCO`` reads it as it is."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from synthset.errors import SynthsetError
from synthset.export.base import ExportJob, close_folder, finished_info, link_or_copy, open_folder
from synthset.export.yolo import flat_name
from synthset.store.atomic import write_json_with_lists


def _rle(mask: np.ndarray) -> dict[str, Any]:
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise SynthsetError(
            "export.coco_segmentation rle needs pycocotools: pip install pycocotools "
            "(or use coco_segmentation: polygon)"
        ) from None
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def export_coco(job: ExportJob, dest: Path) -> dict[str, Any]:
    labels = job.labels_of("coco")
    style = job.spec.coco_segmentation
    fp = job.digest("coco", style)
    if open_folder(dest, fp):
        return finished_info(dest)
    annotation_ids = itertools.count(1)

    def images() -> Iterator[dict[str, Any]]:
        for image_id, it in enumerate(
            tqdm(job.items, desc="coco", unit="img", disable=not job.progress), 1
        ):
            target = dest / "images" / flat_name(it)
            if not (target.exists() and target.stat().st_size == it.path.stat().st_size):
                link_or_copy(it.path, target)
            row = labels[it.item_id]
            yield {
                "id": image_id,
                "file_name": flat_name(it),
                "width": row["width"],
                "height": row["height"],
                "item_id": it.item_id,
                "label": it.label,
            }

    def annotations() -> Iterator[dict[str, Any]]:
        for image_id, it in enumerate(job.items, 1):
            row = labels[it.item_id]
            for obj in _annotations(job, row, style):
                yield obj | {"id": next(annotation_ids), "image_id": image_id}

    head = {
        "info": {"description": "synthset synthetic dataset", "version": "1.0"},
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(job.class_names)],
    }
    lists = {"images": images(), "annotations": annotations()}  # two passes over the items
    counts = write_json_with_lists(dest / "annotations.json", head, lists)
    info = {"format": "coco", **counts}
    close_folder(dest, fp, info)
    return info


def _annotations(job: ExportJob, row: dict[str, Any], style: str) -> Iterator[dict[str, Any]]:
    """The COCO annotations of one image's objects (without ``id`` and ``image_id``)."""
    instances = None
    if style == "rle" and row["objects"]:
        assert job.labels_dir is not None
        with Image.open(job.labels_dir / row["mask_file"]) as img:
            instances = np.asarray(img)
    for number, obj in enumerate(row["objects"], 1):
        x0, y0, x1, y1 = obj["box"]
        if instances is not None:
            segmentation: Any = _rle(instances == number)
        else:
            segmentation = [[c for point in obj["polygon"] for c in point]]
        yield {
            "category_id": obj["class_id"] + 1,
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": obj["area"],
            "segmentation": segmentation,
            "iscrowd": 0,
            "score": obj.get("score"),
        }
