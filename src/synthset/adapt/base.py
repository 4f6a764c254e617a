"""The adapter protocol: learn from the real train split before generating, then hand the
generator what it needs to load the result."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from synthset.classes import ClassInfo
    from synthset.data.splits import Samples
    from synthset.recipe import AdaptSpec


class Adapter(Protocol):
    """One adaptation method (``adapt.method``), built from its recipe section.

    ``fit`` trains on the real train split and writes its artifact to ``out_dir`` atomically
    (``out_dir`` exists only once training is finished; a killed fit resumes or restarts).
    ``generator_inputs`` names the ``generate.generator`` fields the artifact supplies, e.g.
    ``{"model": out_dir}`` (a whole model), ``{"textual_inversion": [...]}``, ``{"lora": [...]}``
    or ``{"prompt_embeds": ...}``; they fill only the fields the recipe leaves unset.
    """

    def __init__(self, spec: AdaptSpec) -> None: ...

    def fit(
        self,
        train: Samples,
        classes: list[ClassInfo],
        out_dir: Path,
        seed: int,
        progress: bool = True,
    ) -> None: ...

    def generator_inputs(self, out_dir: Path) -> dict[str, Any]: ...
