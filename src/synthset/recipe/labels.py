"""The labels section: object masks, boxes and polygons for every synthetic image, beyond its
class. Where a label comes from (``method``) decides what generation records."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from synthset.recipe.base import Strict

LabelMethod = Literal["cross_attention", "inpaint_mask", "detector"]


class AttentionSpec(Strict):
    """What the cross-attention recorder keeps while the UNet generates (DAAM-style)."""

    words: dict[str, str] = Field(
        {},
        description="The word of each class to trace in its prompts (default: the class name, "
        "underscores as spaces). Every prompt must contain its own class's word.",
    )
    heat: Literal["attention", "guidance"] = Field(
        "attention",
        description="attention: each word's cross-attention probabilities (DAAM). guidance: "
        "where the prompt changes the UNet's prediction, |conditional - unconditional| summed "
        "over channels, each step scaled to its maximum, summed over steps (DiffEdit's mask; "
        "needs guidance_scale > 1); a prompt naming "
        "several classes shares it among them by their attention.",
    )
    min_resolution: int = Field(
        0,
        ge=0,
        description="Skip attention layers whose map side (in latent cells) is below this; 0 "
        "keeps every layer (DAAM keeps all but the coarsest on SD).",
    )

    @field_validator("words")
    @classmethod
    def _words_not_blank(cls, v: dict[str, str]) -> dict[str, str]:
        for name, word in v.items():
            if not word.strip():
                raise ValueError(f"the word for class {name!r} is blank; give a word or drop it")
        return v


class DetectorSpec(Strict):
    """A trained detection or segmentation model that labels the generated images."""

    framework: Literal["ultralytics", "torchvision"] = Field(
        description="ultralytics: a YOLO .pt (det or seg); torchvision: a state dict of "
        "'architecture' (safetensors or .pt, loaded with weights_only)."
    )
    weights: Path = Field(description="The local weights file (nothing is downloaded).")
    architecture: str = Field(
        "maskrcnn_resnet50_fpn",
        description="torchvision: the torchvision.models.detection builder, e.g. "
        "maskrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn_v2, fasterrcnn_mobilenet_v3_large_fpn.",
    )
    categories: list[str] | None = Field(
        None,
        description="torchvision: the model's class names by output index (index 0 is the "
        "background); default: the COCO categories torchvision's weights use.",
    )
    class_map: dict[str, str] = Field(
        description="The model's class name -> the dataset's class; detections of classes not "
        "listed are dropped, e.g. {person: pedestrian, car: car, truck: car}.",
        min_length=1,
    )
    confidence: float = Field(0.25, ge=0, le=1, description="Detections below this are dropped.")
    image_size: int | None = Field(
        None, ge=32, description="ultralytics: the inference size (default: the model's)."
    )


class LabelsSpec(Strict):
    """``synthset label``: a mask, box and polygon per named object of every synthetic image."""

    method: LabelMethod = Field(
        "cross_attention",
        description="cross_attention: heat maps of the class words' cross-attention, recorded "
        "while generating (UNet pipelines: SD 1.x/2.x, SDXL); inpaint_mask: the inpaint mode's "
        "object mask; detector: a trained YOLO or torchvision model run on every image.",
    )
    detector: DetectorSpec | None = Field(None, description="detector: the model and mapping.")
    attention: AttentionSpec | None = Field(
        None, description="cross_attention: what to record (default: every class's name)."
    )
    threshold: float | Literal["otsu"] = Field(
        "otsu",
        description="Heat maps are scaled to [0, 1]; pixels above this are the object ('otsu': "
        "per map, Otsu's threshold). DAAM's paper uses 0.4.",
    )
    max_objects: int = Field(
        1, ge=1, description="Connected regions kept per named class (largest first)."
    )
    min_area: float = Field(
        0.002,
        ge=0,
        lt=1,
        description="Regions smaller than this fraction of the image are dropped as noise.",
    )
    polygon_tolerance: float = Field(
        1.0, ge=0, description="Polygon simplification, in pixels (0: every contour point)."
    )

    @field_validator("threshold")
    @classmethod
    def _threshold_in_range(cls, v: float | str) -> float | str:
        if not isinstance(v, str) and not 0 < v < 1:
            raise ValueError(f"a fixed threshold lies in (0, 1) (got {v}); or give 'otsu'")
        return v

    @model_validator(mode="after")
    def _attention_for_its_method(self) -> LabelsSpec:
        records_attention = self.method == "cross_attention"
        if records_attention and self.attention is None:
            self.attention = AttentionSpec()
        if not records_attention and self.attention is not None:
            raise ValueError(f"labels.attention is for method cross_attention, not {self.method}")
        if (self.method == "detector") != (self.detector is not None):
            raise ValueError(
                "method detector needs labels.detector (framework, weights, class_map)"
                if self.detector is None
                else f"labels.detector is for method detector, not {self.method}"
            )
        return self

    def recorded(self) -> dict[str, Any] | None:
        """What generation must record for these labels (part of every image's settings), or
        None when generation records nothing."""
        if self.attention is not None:
            return {"attention": self.attention.model_dump(mode="json")}
        if self.method == "inpaint_mask":
            return {"object_mask": True}
        return None

    def word_of(self, class_name: str) -> str:
        """The word traced for ``class_name``."""
        words = self.attention.words if self.attention is not None else {}
        return words.get(class_name, class_name.replace("_", " "))
