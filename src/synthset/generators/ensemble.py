"""An ensemble of generators: each item names its member (``params['generator']``, set by the
plan); every member is loaded once, on first use, and runs its own items of a batch together."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from PIL import Image

from synthset.errors import SynthsetError
from synthset.generators.base import Generator, SideFile, side_files

if TYPE_CHECKING:
    from synthset.plan import WorkItem
    from synthset.recipe import GeneratorSpec


class EnsembleGenerator:
    """Dispatches each item to its member generator; images come back in item order."""

    name = "ensemble"

    def __init__(
        self, members: dict[str, GeneratorSpec], build: Callable[[GeneratorSpec], Generator]
    ) -> None:
        self.members = members
        self._build = build
        self._loaded: dict[str, Generator] = {}

    def member(self, name: str) -> Generator:
        """The member called ``name``, built the first time it is needed."""
        if name not in self.members:
            known = ", ".join(self.members)
            raise SynthsetError(
                f"generate.generators: the plan names generator {name!r}, which the recipe does "
                f"not list ({known}); re-run 'synthset plan'"
            )
        if name not in self._loaded:
            self._loaded[name] = self._build(self.members[name])
        return self._loaded[name]

    def name_of(self, item: WorkItem) -> str:
        """What the manifest records as the item's generator: its member's name."""
        return str(item.params.get("generator", ""))

    def generate(self, items: Sequence[WorkItem]) -> list[Image.Image]:
        out: dict[int, Image.Image] = {}
        groups: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            groups.setdefault(self.name_of(it), []).append(i)
        for name, idx in groups.items():  # first-appearance order: fixed for a fixed chunk
            images = self.member(name).generate([items[i] for i in idx])
            out.update(zip(idx, images, strict=True))
        return [out[i] for i in range(len(items))]

    def side_files(self, item: WorkItem) -> list[SideFile]:
        """The side files the item's member made for it."""
        return side_files(self.member(self.name_of(item)), item)
