"""The retrieve section: real images retrieved per class from an unlabeled pool, the baseline
synthetic data has to beat (``evaluate.train_sets: [retrieved, retrieved+synthetic]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from synthset.recipe.base import Strict
from synthset.recipe.curate import LeakSpec


class RetrieveSpec(Strict):
    """'synthset retrieve': rank every pool image against every class, give it the class it
    matches best, and keep the top ``per_class`` of each class that are not near-duplicates of
    the real val/test images (``retrieve/retrieved.jsonl`` + ``retrieve/images/``)."""

    pool: Path = Field(
        description="The unlabeled pool: a folder of images (any depth; a .txt file beside an "
        "image is its caption), a folder of WebDataset .tar shards (or one .tar), or a folder "
        "written by datasets' save_to_disk."
    )
    by: Literal["clip", "prototypes", "caption", "clip+caption"] = Field(
        "clip",
        description="clip: CLIP similarity of each image to the class prompts (retrieve."
        "clip_model); prototypes: cosine similarity of an extractor's features to the mean "
        "features of 'shots' labelled real train images per class (kNN retrieval, no text "
        "model needed); caption: the caption names the class (and no other class); "
        "clip+caption: images whose caption names the class, ranked by CLIP similarity (the "
        "unmet-promise study's substring + CLIP retrieval).",
    )
    clip_model: str | None = Field(
        None,
        description="by clip: a local CLIP (transformers folder or open_clip:<arch>@<file>).",
    )
    templates: list[str] = Field(
        ["a photo of a {}."],
        min_length=1,
        description="by clip: prompts per class ('{}' is the class name); a class's text "
        "embedding is the mean over them.",
    )
    extractor: str = Field(
        "classifier",
        description="by prototypes: classifier (evaluate.classifier trained on real train, "
        "selected on val), torchscript:<file>, torchvision:<arch> or timm:<arch> (with weights).",
    )
    weights: Path | None = Field(
        None, description="by prototypes: a .safetensors state dict for torchvision:/timm:."
    )
    extractor_image_size: int = Field(
        224, ge=8, description="Input size of a torchscript:/torchvision:/timm: extractor."
    )
    shots: int = Field(
        5, ge=1, description="by prototypes: labelled real train images per class (seeded)."
    )
    per_class: int | None = Field(
        None,
        ge=1,
        description="Images kept per class; null: as many as the synthetic set has of that "
        "class, so retrieved and synthetic are compared at equal counts.",
    )
    leak_check: LeakSpec = Field(
        LeakSpec(), description="Pool images this close to a real val/test image are never kept."
    )
    image_column: str = Field("image", description="HF pool: the image column.")
    caption_column: str = Field("text", description="HF pool: the caption column (optional).")
    batch_size: int = Field(64, ge=1, description="Pool images per embedding batch.")
    device: str = "auto"

    @model_validator(mode="after")
    def _needs(self) -> RetrieveSpec:
        if self.by in ("clip", "clip+caption") and not self.clip_model:
            raise ValueError(
                f"retrieve.by {self.by} needs retrieve.clip_model (a local CLIP folder or "
                "open_clip:<arch>@<file>); or use by: prototypes"
            )
        if any("{}" not in t for t in self.templates):
            raise ValueError("every retrieve.templates entry needs '{}' for the class name")
        return self
