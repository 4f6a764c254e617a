"""The adapter protocol: learn from the real train split before generating, then hand the
generator what it needs to load the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from synthset.classes import ClassInfo
    from synthset.data.splits import Samples
    from synthset.recipe import AdaptSpec


@dataclass(frozen=True)
class AdaptData:
    """What an adapter learns from: the real train split (already cut to ``adapt.real_subset``),
    the real val split (validation loss only), the classes, and each class's prompts from the
    prompts stage (captions for methods that train on text; empty when there are none)."""

    train: Samples
    classes: list[ClassInfo]
    val: Samples = field(default_factory=list)
    prompts: dict[int, list[str]] = field(default_factory=dict)

    @classmethod
    def for_spec(
        cls,
        spec: AdaptSpec,
        train: Samples,
        classes: list[ClassInfo],
        val: Samples | None = None,
        prompts: dict[int, list[str]] | None = None,
    ) -> AdaptData:
        """The data ``spec`` adapts on: ``train`` cut to ``spec.real_subset`` (the stratified
        subset evaluate's real_subsets pick), with every class still present."""
        from synthset.data.subsets import subset_samples

        train = subset_samples(train, spec.real_subset, len(classes))
        return cls(train, classes, list(val or []), dict(prompts or {}))


class Adapter(Protocol):
    """One adaptation method (``adapt.method``), built from its recipe section.

    ``fit`` trains on ``data.train`` and writes its artifact to ``out_dir`` atomically
    (``out_dir`` exists only once training is finished; a killed fit resumes or restarts).
    ``generator_inputs`` names the ``generate.generator`` fields the artifact supplies, e.g.
    ``{"model": out_dir}`` (a whole model), ``{"textual_inversion": [...]}``, ``{"lora": [...]}``
    or ``{"prompt_embeds": ...}``; they fill only the fields the recipe leaves unset.
    """

    def __init__(self, spec: AdaptSpec) -> None: ...

    def fit(self, data: AdaptData, out_dir: Path, seed: int, progress: bool = True) -> None: ...

    def generator_inputs(self, out_dir: Path) -> dict[str, Any]: ...
