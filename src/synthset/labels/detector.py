"""Supervised labels: a trained detection or segmentation model run on every generated image
(DiffuGen's supervised labeler). Ultralytics YOLO (det or seg) or a torchvision detection model
(Mask R-CNN, Faster R-CNN, ...) from a local weights file; the model's class names map to the
dataset's through ``labels.detector.class_map``, and detections of unmapped classes or under
``confidence`` are dropped. A box-only model's mask is its box."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from synthset.errors import SynthsetError, first_line
from synthset.labels.sources import Candidate, LabelSource
from synthset.recipe import DetectorSpec, LabelsSpec


@dataclass(frozen=True)
class Detection:
    """One detection in image pixels: the model's class name, score, box and mask."""

    name: str
    score: float
    box: tuple[float, float, float, float]
    mask: np.ndarray | None  # bool (H, W), None for a box-only model


def box_mask(box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """The pixels a box covers (x1, y1 exclusive after rounding)."""
    x0, y0, x1, y1 = (round(v) for v in box)
    mask = np.zeros((size[1], size[0]), dtype=bool)
    mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return mask


def polygon_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A polygon (N, 2) of (x, y) image coordinates, rasterised."""
    canvas = Image.new("1", size, 0)
    if len(points) >= 3:
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in points.tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)


class UltralyticsModel:
    """A YOLO ``.pt`` (detect or segment) through ``ultralytics.YOLO``."""

    def __init__(self, spec: DetectorSpec) -> None:
        try:
            from ultralytics import YOLO
        except ImportError:
            raise SynthsetError(
                "labels.detector.framework ultralytics needs the ultralytics package: "
                "pip install ultralytics"
            ) from None
        self.spec = spec
        self.model = YOLO(str(spec.weights))

    def __call__(self, path: Path, size: tuple[int, int]) -> list[Detection]:
        kwargs: dict[str, Any] = {"conf": self.spec.confidence, "verbose": False}
        if self.spec.image_size is not None:
            kwargs["imgsz"] = self.spec.image_size
        (result,) = self.model.predict(str(path), **kwargs)
        boxes = result.boxes
        polygons = result.masks.xy if result.masks is not None else None
        out = []
        for k in range(len(boxes)):
            cls = int(boxes.cls[k])
            mask = polygon_mask(np.asarray(polygons[k]), size) if polygons is not None else None
            box = tuple(float(v) for v in boxes.xyxy[k].tolist())
            out.append(Detection(result.names[cls], float(boxes.conf[k]), box, mask))  # type: ignore[arg-type]
        return out


class TorchvisionModel:
    """A ``torchvision.models.detection`` model built without weights, then loaded from the
    local state dict (safetensors, or ``torch.load(weights_only=True)``)."""

    def __init__(self, spec: DetectorSpec) -> None:
        import torch
        from torchvision.models import detection

        builder = getattr(detection, spec.architecture, None)
        if builder is None or not callable(builder):
            raise SynthsetError(
                f"labels.detector.architecture: torchvision has no detection model "
                f"{spec.architecture!r}; e.g. maskrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn_v2"
            )
        self.categories = spec.categories or _coco_categories()
        model = builder(weights=None, weights_backbone=None, num_classes=len(self.categories))
        try:
            if str(spec.weights).endswith(".safetensors"):
                from safetensors.torch import load_file

                state = load_file(str(spec.weights))
            else:
                state = torch.load(spec.weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except (RuntimeError, OSError, ValueError) as exc:
            raise SynthsetError(
                f"labels.detector.weights: {spec.weights} is not a state dict of "
                f"{spec.architecture} with {len(self.categories)} classes ({first_line(exc)}); "
                "check architecture and categories"
            ) from None
        self.model = model.eval()
        self.spec = spec

    def __call__(self, path: Path, size: tuple[int, int]) -> list[Detection]:
        import torch
        from torchvision.transforms.functional import to_tensor

        with Image.open(path) as img:
            x = to_tensor(img.convert("RGB"))
        with torch.inference_mode():
            (pred,) = self.model([x])
        out = []  # the source drops detections under the confidence, for either framework
        for k in range(len(pred["scores"])):
            score = float(pred["scores"][k])
            box = tuple(float(v) for v in pred["boxes"][k].tolist())
            mask = (pred["masks"][k, 0] > 0.5).numpy() if "masks" in pred else None
            name = self.categories[int(pred["labels"][k])]
            out.append(Detection(name, score, box, mask))  # type: ignore[arg-type]
        return out


def _coco_categories() -> list[str]:
    """The 91 COCO category names torchvision's detection weights use (index 0: background);
    read from the weights' metadata, which needs no download."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    return list(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


MODELS = {"ultralytics": UltralyticsModel, "torchvision": TorchvisionModel}


@dataclass
class DetectorSource:
    """Runs the model on each image; mapped, confident detections become candidates."""

    spec: DetectorSpec
    class_ids: dict[str, int]
    model: Any

    def __call__(self, root: Path, row: dict[str, Any], size: tuple[int, int]) -> list[Candidate]:
        found = []
        for det in self.model(Path(row["path"]), size):
            target = self.spec.class_map.get(det.name)
            if target is None or det.score < self.spec.confidence:
                continue
            mask = det.mask if det.mask is not None else box_mask(det.box, size)
            if not mask.any():
                continue
            box = tuple(int(round(v)) for v in det.box)
            found.append(Candidate(self.class_ids[target], mask, det.score, box))  # type: ignore[arg-type]
        return found


def detector_source(spec: LabelsSpec, class_names: list[str]) -> LabelSource:
    """The labels source of ``labels.method: detector`` (the model loads once)."""
    det = spec.detector
    assert det is not None
    ids = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(det.class_map.values()) - set(ids))
    if unknown:
        raise SynthsetError(
            f"labels.detector.class_map: {', '.join(map(repr, unknown))} is not one of the "
            "run's classes (classes.json); map to the dataset's class names"
        )
    if not Path(det.weights).expanduser().is_file():
        raise SynthsetError(
            f"labels.detector.weights: {det.weights} does not exist; give a local weights file"
        )
    return DetectorSource(det, ids, MODELS[det.framework](det))
