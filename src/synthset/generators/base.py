"""The generator protocol and what every generator shares: per-item seeding and resizing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from PIL import Image

if TYPE_CHECKING:
    import torch

    from synthset.plan import WorkItem


class Generator(Protocol):
    """Makes one image per work item. Must be deterministic per item: the image of an item
    depends only on the item (its seed, prompt, params) and the batch it is run in."""

    name: str

    def generate(self, items: Sequence[WorkItem]) -> list[Image.Image]: ...


def item_generators(
    items: Sequence[WorkItem], device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One seeded ``torch.Generator`` per item: each image's noise depends on its seed only."""
    import torch

    gen_device = "cpu" if torch.device(device).type == "mps" else device
    return [torch.Generator(device=gen_device).manual_seed(it.seed) for it in items]


def resize_for_saving(image: Image.Image, save_size: int | tuple[int, int] | None) -> Image.Image:
    """Resize to the recipe's ``save_size`` (int → square) with a high-quality filter."""
    if save_size is None:
        return image
    size = (save_size, save_size) if isinstance(save_size, int) else tuple(save_size)
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class SideFile:
    """A file a generator makes beside an item's image (a heat map, a mask): stored at
    ``<run>/<folder>/<image path without extension><suffix>`` before the image is recorded
    done, so a finished item always has its side files."""

    folder: str
    suffix: str
    data: bytes


def side_files(generator: Generator, item: WorkItem) -> list[SideFile]:
    """The side files ``generator`` made for ``item`` in its last batch (none for most)."""
    take = getattr(generator, "side_files", None)
    return take(item) if take is not None else []
