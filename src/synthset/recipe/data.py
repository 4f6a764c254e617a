"""The classes and real sections: where class names and real images come from."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from synthset.recipe.base import Strict


class ClassesSpec(Strict):
    """Where class names come from: one of ``names``, ``file``, ``imagefolder``, ``dataset``."""

    names: list[str] | None = Field(None, description="Class names, in label order.")
    file: Path | None = Field(None, description="Text file with one class name per line.")
    imagefolder: Path | None = Field(None, description="Folder whose sub-folders are the classes.")
    dataset: str | None = Field(
        None, description="A known dataset's class list: digits, cifar10, cifar100, imagenet, …"
    )
    synonyms: dict[str, list[str]] = Field(
        {}, description="Other names per class (label check and prompts), e.g. {car: [automobile]}."
    )
    descriptions: dict[str, str] = Field(
        {}, description="A short description or hypernym per class, e.g. {tabby: a kind of cat}."
    )

    @field_validator("names")
    @classmethod
    def _trimmed(cls, v: list[str] | None) -> list[str] | None:
        """Surrounding spaces are not part of a name: 'cat' and 'cat ' are one class."""
        if v is None:
            return None
        names = [n.strip() for n in v]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"class name {dup!r} appears twice; class names must be unique")
        return names

    @model_validator(mode="after")
    def _exactly_one(self) -> ClassesSpec:
        given = [k for k in ("names", "file", "imagefolder", "dataset") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of names, file, imagefolder, dataset"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class RealDataSpec(Strict):
    """Real images: the adaptation data and the CAS train / validation / test splits."""

    source: Literal["digits", "imagefolder", "hf", "torchvision"] = Field(
        "digits",
        description="digits (bundled), imagefolder, hf (Hugging Face datasets) or torchvision.",
    )
    path: Path | None = Field(
        None,
        description="imagefolder root: either train/ val/ test/ sub-folders, or class folders "
        "that synthset splits itself. hf: a folder saved with save_to_disk, a local data folder "
        "(parquet, imagefolder, ...) or a hub id (needs network).",
    )
    name: str | None = Field(
        None, description="torchvision: the dataset class, e.g. CIFAR10, MNIST, FashionMNIST, SVHN."
    )
    root: Path | None = Field(
        None,
        description="torchvision: the folder holding the dataset's files in torchvision's layout "
        "(never downloaded here).",
    )
    image_column: str = Field("image", description="hf: the column holding the images.")
    label_column: str = Field("label", description="hf: the column holding the labels.")
    splits: dict[Literal["train", "val", "test"], str] | None = Field(
        None,
        description="hf / torchvision: the source's split name for each of train / val / test, "
        "e.g. {train: train, test: test}; a split left out is carved from train. "
        "Default: train, validation (hf, if present), test.",
    )
    labels: Literal["auto", "name", "index"] = Field(
        "auto",
        description="hf / torchvision: match source labels to the recipe's classes by class name, "
        "or by index (label k = the k-th class). auto: by name when the source has names.",
    )
    max_per_class: int | None = Field(
        None, ge=1, description="hf / torchvision: at most this many images per class and split."
    )
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(
        0.25,
        ge=0,
        lt=0.5,
        description="Share held out for testing when the source has no test split (0: the "
        "source must have one).",
    )

    @model_validator(mode="after")
    def _path_needed(self) -> RealDataSpec:
        if self.source in ("imagefolder", "hf") and self.path is None:
            what = "a folder of class folders" if self.source == "imagefolder" else "a dataset"
            raise ValueError(f"source '{self.source}' needs 'path' ({what})")
        if self.source == "torchvision" and (self.name is None or self.root is None):
            raise ValueError(
                "source 'torchvision' needs 'name' (e.g. CIFAR10) and 'root' (its files' folder)"
            )
        if self.splits is not None and "train" not in self.splits:
            raise ValueError("splits must name the source's train split, e.g. {train: train}")
        return self
