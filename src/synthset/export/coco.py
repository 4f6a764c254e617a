"""COCO: ``images/<item>.<ext>`` (hard links) and ``annotations.json`` with one annotation per
object: ``bbox`` [x, y, w, h], ``area``, and ``segmentation`` as polygons or as RLE of the
labels stage's mask (``export.coco_segmentation``). Category ids are class ids + 1 (COCO's ids
start at 1). ``pycocotools.coco.COCO`` reads it as it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from synthset.errors import SynthsetError
from synthset.export.base import ExportJob, close_folder, finished_info, link_or_copy, open_folder
from synthset.export.yolo import flat_name
from synthset.store.atomic import atomic_write_text


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
    images, annotations = [], []
    for image_id, it in enumerate(
        tqdm(job.items, desc="coco", unit="img", disable=not job.progress), 1
    ):
        target = dest / "images" / flat_name(it)
        if not (target.exists() and target.stat().st_size == it.path.stat().st_size):
            link_or_copy(it.path, target)
        row = labels[it.item_id]
        images.append(
            {
                "id": image_id,
                "file_name": flat_name(it),
                "width": row["width"],
                "height": row["height"],
                "item_id": it.item_id,
                "label": it.label,
            }
        )
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
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj["class_id"] + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": obj["area"],
                    "segmentation": segmentation,
                    "iscrowd": 0,
                    "score": obj.get("score"),
                }
            )
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(job.class_names)]
    coco = {
        "info": {"description": "synthset synthetic dataset", "version": "1.0"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    atomic_write_text(dest / "annotations.json", json.dumps(coco))
    info = {"format": "coco", "images": len(images), "annotations": len(annotations)}
    close_folder(dest, fp, info)
    return info
