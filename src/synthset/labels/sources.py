"""Where each ``labels.method`` finds an image's objects (:class:`Candidate`: class, mask,
score): the heat maps the attention recorder stored and the inpaint mode's object masks are
thresholded into regions; a detector (``labels/detector.py``) finds instances itself. A source
is built once per stage run from the labels spec and the class names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from synthset.errors import SynthsetError
from synthset.labels.shapes import regions, scale_unit, threshold_map
from synthset.recipe import LabelsSpec
from synthset.registry import Registry
from synthset.store.imagefolder import side_path
from synthset.store.labels import ATTENTION_FOLDER, OBJECT_MASK_FOLDER, read_heat_maps


@dataclass(frozen=True)
class Candidate:
    """One object found in an image, before the stage numbers and draws it."""

    class_id: int
    mask: np.ndarray  # bool (H, W) at the saved image's size
    score: float
    box: tuple[int, int, int, int] | None = None  # a detector's own box (else the mask's)


class LabelSource(Protocol):
    """The objects of one image: ``(run root, index row with path, image size (w, h))``."""

    def __call__(
        self, root: Path, row: dict[str, Any], size: tuple[int, int]
    ) -> list[Candidate]: ...


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


def map_candidates(
    spec: LabelsSpec, maps: dict[int, np.ndarray], threshold: float | str
) -> list[Candidate]:
    """Each class's score map scaled to [0, 1], thresholded, split into its largest regions."""
    found = []
    for cid in sorted(maps):
        unit = scale_unit(maps[cid])
        mask = threshold_map(unit, threshold)
        for region in regions(mask, spec.max_objects, spec.min_area):
            found.append(Candidate(cid, region, float(unit[region].mean())))
    return found


@dataclass
class AttentionSource:
    """The cross-attention heat maps recorded while generating (one per named class)."""

    spec: LabelsSpec

    def __call__(self, root: Path, row: dict[str, Any], size: tuple[int, int]) -> list[Candidate]:
        path = side_path(root, ATTENTION_FOLDER, str(row["file_name"]), ".npz")
        if not path.is_file():
            raise _missing(path, "the cross-attention recorder")
        maps = read_heat_maps(path.read_bytes())
        sized = {cid: resized(heat, size) for cid, heat in maps.items()}
        return map_candidates(self.spec, sized, self.spec.threshold)


@dataclass
class ObjectMaskSource:
    """The inpaint mode's object mask: one object of the image's own class."""

    spec: LabelsSpec

    def __call__(self, root: Path, row: dict[str, Any], size: tuple[int, int]) -> list[Candidate]:
        path = side_path(root, OBJECT_MASK_FOLDER, str(row["file_name"]), ".png")
        if not path.is_file():
            raise _missing(path, "its object masks")
        with Image.open(path) as img:
            mask = img.convert("L").resize(size, Image.Resampling.NEAREST)
        binary = {int(row["label"]): np.asarray(mask, dtype=np.float32) / 255.0}
        return map_candidates(self.spec, binary, 0.5)


def attention_source(spec: LabelsSpec, class_names: list[str]) -> LabelSource:
    return AttentionSource(spec)


def object_mask_source(spec: LabelsSpec, class_names: list[str]) -> LabelSource:
    return ObjectMaskSource(spec)


#: ``labels.method`` → a factory ``(labels spec, class names) -> LabelSource``.
LABEL_SOURCES: Registry[Callable[[LabelsSpec, list[str]], LabelSource]] = Registry(
    "labels.method",
    {
        "cross_attention": "synthset.labels.sources:attention_source",
        "inpaint_mask": "synthset.labels.sources:object_mask_source",
        "detector": "synthset.labels.detector:detector_source",
    },
)
