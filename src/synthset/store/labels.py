"""The labels table: ``labels/labels.jsonl``, one row per labeled synthetic image (item id, file
name, size, objects with class, box, polygon and area), and ``labels/masks/<class>/<item>.png``
(pixel value = the object's number in the row's list + 1, 0 = background). Exports and the
report read it from here."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from synthset.errors import SynthsetError
from synthset.store.atomic import read_jsonl

LABELS_FILE = "labels.jsonl"
SUMMARY_FILE = "labels.json"
MASKS_FOLDER = "masks"
#: Side files of generation that labels read: ``<run>/<folder>/<class>/<item>.<ext>``
ATTENTION_FOLDER = "attention"  # cross-attention heat maps (.npz, one array per class id)
OBJECT_MASK_FOLDER = "object_masks"  # the inpaint mode's object masks (.png, white = object)


def heat_maps_npz(maps: dict[int, np.ndarray]) -> bytes:
    """Heat maps by class id (``c<id>``), float32, as one compressed npz."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"c{cid}": np.asarray(m, np.float32) for cid, m in maps.items()})
    return buf.getvalue()


def read_heat_maps(data: bytes) -> dict[int, np.ndarray]:
    """The heat maps of one image by class id, from the bytes of its npz."""
    with np.load(io.BytesIO(data)) as npz:
        return {int(k[1:]): npz[k] for k in npz.files}


def read_labels(labels_dir: Path) -> dict[str, dict[str, Any]]:
    """Label rows by item id; a missing table is a one-line error."""
    path = Path(labels_dir) / LABELS_FILE
    if not path.exists():
        raise SynthsetError(
            f"no labels in {labels_dir}: add a 'labels' section and run 'synthset label' first"
        )
    return {str(r["item_id"]): r for r in read_jsonl(path)}
