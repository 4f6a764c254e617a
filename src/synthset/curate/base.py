"""What every scorer gets (:class:`ScoringContext`) and must do (:class:`Scorer`).

A scorer gives one float per synthetic image, higher meaning better. It names the recipe
settings its scores depend on (:meth:`Scorer.settings`); together with the synthetic index and
the real splits they fingerprint its cached column, so a changed rule never rescores."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from synthset.data.splits import Samples
from synthset.evaluate.tensors import TensorSet, infer_format, load_tensors
from synthset.recipe import CurateSpec, EvaluateSpec
from synthset.recipe.evaluate import NOT_REFERENCE_TRAINING


@dataclass
class ScoringContext:
    """The synthetic images to score and the real images to score them against (train and val
    only: curation never reads the test split, except for the leak check)."""

    spec: CurateSpec
    synthetic: list[dict[str, Any]]  # rows of the synthetic index: item_id, path, label, ...
    real: dict[str, Samples]  # "train", "val"
    class_names: list[str]
    cache_dir: Path  # the reference classifier's weights
    tensor_cache: Path | None  # decoded images, shared with the evaluate stage
    device: torch.device
    seed: int
    progress: bool = True
    evaluate: EvaluateSpec = field(default_factory=EvaluateSpec)
    #: ``adapt.real_subset`` of a low-data study: ``real["train"]`` is already cut to it, so the
    #: reference and the proxies learn from the real images the generator saw, no more
    real_subset: float | None = None
    reference_seconds: float = 0.0  # training (or loading) the reference classifier
    _real_sets: dict[str, TensorSet] = field(default_factory=dict, init=False, repr=False)

    @cached_property
    def image_format(self) -> tuple[int, int]:
        """(size, channels) evaluation uses: the evaluate section's, else the real images'."""
        size, channels = infer_format(self.real["train"], "real train")
        return self.evaluate.image_size or size, self.evaluate.channels or channels

    @property
    def samples(self) -> Samples:
        return [(r["path"], r["label"]) for r in self.synthetic]

    @cached_property
    def synthetic_tensors(self) -> TensorSet:
        """The synthetic images decoded once at the evaluation format."""
        size, channels = self.image_format
        return load_tensors(self.samples, size, channels, "synthetic", self.tensor_cache)

    def real_tensors(self, split: str) -> TensorSet:
        """A real split decoded once per stage run (scorers and every 'auto' proxy share it)."""
        if split not in self._real_sets:
            size, channels = self.image_format
            self._real_sets[split] = load_tensors(
                self.real[split], size, channels, f"real {split}", self.tensor_cache
            )
        return self._real_sets[split]

    def reference_spec(self) -> EvaluateSpec:
        """The evaluate settings with the curate section's classifier, epochs and seed."""
        return self.evaluate.model_copy(
            update={
                "classifier": self.spec.classifier,
                "epochs": self.spec.epochs,
                "seeds": [self.seed],
            }
        )

    def reference_settings(self) -> dict[str, Any]:
        """What the reference classifier is trained with (with the real splits, which the score
        cache keys anyway): part of the key of every score computed from it."""
        spec = self.reference_spec().model_dump(mode="json", exclude=set(NOT_REFERENCE_TRAINING))
        settings = {"spec": spec, "format": list(self.image_format)}
        if self.real_subset is not None:  # (absent otherwise: older runs keep their columns)
            settings["real_subset"] = self.real_subset
        return settings

    @cached_property
    def reference(self) -> nn.Module:
        """The classifier trained on real train, selected on real val (cached on disk)."""
        from synthset.evaluate.reference import reference_classifier

        size, channels = self.image_format
        start = time.perf_counter()
        model = reference_classifier(
            self.reference_spec(),
            self.real,
            len(self.class_names),
            size,
            channels,
            self.device,
            self.cache_dir,
            self.progress,
            field="curate (label_agreement, typicality)",
        )
        self.reference_seconds = round(time.perf_counter() - start, 3)
        return model


class Scorer(Protocol):
    """One per-image score (``curate.scorers``)."""

    name: str
    #: its scores come from the reference classifier, so they are keyed by what it trains with
    uses_reference: bool

    def __init__(self, spec: CurateSpec) -> None: ...

    def settings(self) -> dict[str, Any]:
        """The recipe values its scores depend on (their cache's fingerprint)."""
        ...

    def score(self, ctx: ScoringContext) -> np.ndarray:
        """One float per ``ctx.synthetic`` row, higher is better."""
        ...
