"""The labels stage: for every kept synthetic image, the per-class score maps its method
recorded become objects (mask region, box, polygon, area). Writes ``labels/labels.jsonl``, one
instance image per synthetic image (``labels/masks/<class>/<item>.png``: the number of the
object in the row's ``objects`` list + 1 per pixel, 0 background) and ``labels/labels.json``
(per-class counts, mean mask area, images whose own class was not found)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from synthset.labels.shapes import box_of, polygon_of
from synthset.labels.sources import LABEL_SOURCES, Candidate
from synthset.recipe import LabelsSpec
from synthset.store.atomic import atomic_write_bytes, atomic_write_json, write_jsonl
from synthset.store.imagefolder import encode_image
from synthset.store.labels import LABELS_FILE, MASKS_FOLDER, SUMMARY_FILE

#: The flag of an image in which its own class was not found (a curation signal).
OWN_CLASS_MISSING = "own_class_missing"


def label_all(
    spec: LabelsSpec,
    rows: list[dict[str, Any]],
    class_names: list[str],
    run_root: Path,
    out_dir: Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Label ``rows`` (kept rows of the synthetic index, with ``path``); returns the summary."""
    source = LABEL_SOURCES.load(spec.method)(spec, class_names)
    tally = _Tally(class_names)

    def table() -> Iterator[dict[str, Any]]:
        for row in tqdm(rows, desc="label", unit="img", disable=not progress):
            with Image.open(row["path"]) as img:
                size = img.size
            objects, instance_image = _objects(
                source(run_root, row, size), class_names, size, spec.polygon_tolerance
            )
            mask_file = Path(MASKS_FOLDER) / Path(str(row["file_name"])).with_suffix(".png")
            atomic_write_bytes(out_dir / mask_file, encode_image(instance_image, "png"))
            own = int(row["label"])
            found = any(o["class_id"] == own for o in objects)
            labeled = {
                "item_id": row["item_id"],
                "file_name": row["file_name"],
                "label": own,
                "width": size[0],
                "height": size[1],
                "objects": objects,
                "mask_file": mask_file.as_posix(),
                "flags": [] if found else [OWN_CLASS_MISSING],
            }
            tally.add(labeled)
            yield labeled

    write_jsonl(out_dir / LABELS_FILE, table())  # a row at a time: memory stays flat
    summary = {"method": spec.method, "threshold": spec.threshold, **tally.summary()}
    atomic_write_json(out_dir / SUMMARY_FILE, summary)
    return {k: summary[k] for k in ("images", "objects", "own_class_missing")}


def _objects(
    found: list[Candidate], class_names: list[str], size: tuple[int, int], tolerance: float
) -> tuple[list[dict[str, Any]], Image.Image]:
    """The objects of one image, largest first, and its instance image (object number + 1 per
    pixel; where objects overlap, the smaller one is on top, and each object's area counts
    its visible pixels)."""
    found = sorted(found, key=lambda c: -int(c.mask.sum()))
    dtype = np.uint16 if len(found) > 254 else np.uint8
    instances = np.zeros((size[1], size[0]), dtype=dtype)
    for k, cand in enumerate(found):
        instances[cand.mask] = k + 1
    areas = np.bincount(instances.ravel(), minlength=len(found) + 1)[1:]
    objects = []
    for k, cand in enumerate(found):
        if areas[k] == 0:
            continue  # hidden under the others
        visible = instances == k + 1
        objects.append(
            {
                "class_id": cand.class_id,
                "class_name": class_names[cand.class_id],
                "box": list(cand.box if cand.box is not None else box_of(cand.mask)),
                "polygon": [[round(x, 2), round(y, 2)] for x, y in polygon_of(visible, tolerance)],
                "area": int(areas[k]),
                "score": round(cand.score, 4),
            }
        )
        instances[visible] = len(objects)  # renumber past hidden ones
    return objects, Image.fromarray(instances)


class _Tally:
    """Per-class counts and mean mask area, added up a row at a time."""

    def __init__(self, class_names: list[str]) -> None:
        self.names = class_names
        self.images = [0] * len(class_names)
        self.missed = [0] * len(class_names)
        self.objects = [0] * len(class_names)
        self.area = [0.0] * len(class_names)

    def add(self, row: dict[str, Any]) -> None:
        self.images[row["label"]] += 1
        self.missed[row["label"]] += OWN_CLASS_MISSING in row["flags"]
        for o in row["objects"]:
            self.objects[o["class_id"]] += 1
            self.area[o["class_id"]] += o["area"] / (row["width"] * row["height"])

    def summary(self) -> dict[str, Any]:
        per_class = {
            name: {
                "images": self.images[cid],
                "objects": self.objects[cid],
                "mean_mask_area": (
                    round(self.area[cid] / self.objects[cid], 4) if self.objects[cid] else None
                ),
                "own_class_missing": self.missed[cid],
            }
            for cid, name in enumerate(self.names)
        }
        return {
            "images": sum(self.images),
            "objects": sum(self.objects),
            "own_class_missing": sum(self.missed),
            "per_class": per_class,
        }
