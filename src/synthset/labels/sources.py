"""Where each ``labels.method`` finds an image's per-class score maps: the heat maps the
attention recorder stored, or the inpaint mode's object mask. Each returns maps at the saved
image's size, by class id, and the threshold that turns them into masks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from synthset.errors import SynthsetError
from synthset.recipe import LabelsSpec
from synthset.registry import Registry
from synthset.store.imagefolder import side_path
from synthset.store.labels import ATTENTION_FOLDER, OBJECT_MASK_FOLDER, read_heat_maps

#: ``(labels spec, run root, index row, image size) -> (maps by class id, threshold)``
MapSource = Callable[[LabelsSpec, Path, dict[str, Any], tuple[int, int]], tuple[dict, Any]]


def _missing(path: Path, what: str) -> SynthsetError:
    return SynthsetError(
        f"labels: {path} is missing; the images were generated without {what}: run "
        "'synthset generate' again with the labels section in the recipe (it regenerates them)"
    )


def resized(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float map resized bicubically to ``size`` (width, height)."""
    if heat.shape[::-1] == tuple(size):
        return heat.astype(np.float32)
    img = Image.fromarray(heat.astype(np.float32), mode="F")
    return np.asarray(img.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)


def attention_maps(
    spec: LabelsSpec, root: Path, row: dict[str, Any], size: tuple[int, int]
) -> tuple[dict[int, np.ndarray], Any]:
    """The recorded cross-attention heat maps of the classes the prompt names."""
    path = side_path(root, ATTENTION_FOLDER, str(row["file_name"]), ".npz")
    if not path.is_file():
        raise _missing(path, "the cross-attention recorder")
    maps = read_heat_maps(path.read_bytes())
    return {cid: resized(heat, size) for cid, heat in maps.items()}, spec.threshold


def object_masks(
    spec: LabelsSpec, root: Path, row: dict[str, Any], size: tuple[int, int]
) -> tuple[dict[int, np.ndarray], Any]:
    """The inpaint mode's object mask, the image's own class."""
    path = side_path(root, OBJECT_MASK_FOLDER, str(row["file_name"]), ".png")
    if not path.is_file():
        raise _missing(path, "its object masks")
    with Image.open(path) as img:
        mask = img.convert("L").resize(size, Image.Resampling.NEAREST)
    return {int(row["label"]): np.asarray(mask, dtype=np.float32) / 255.0}, 0.5


MAP_SOURCES: Registry[MapSource] = Registry(
    "labels.method",
    {
        "cross_attention": "synthset.labels.sources:attention_maps",
        "inpaint_mask": "synthset.labels.sources:object_masks",
    },
)
