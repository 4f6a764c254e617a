"""The generator protocol, per-item seeding, resizing and the factory that builds a generator
from a recipe."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from PIL import Image

from synthset.errors import SynthsetError

if TYPE_CHECKING:
    import torch

    from synthset.plan import WorkItem
    from synthset.recipe import GeneratorSpec


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


def build_generator(
    spec: GeneratorSpec, adapted_model: Path | None, root: Path | None = None
) -> Generator:
    """The generator a recipe asks for, with its model loaded. ``root`` resolves the relative
    real-image paths of img2img / inpaint items (the run folder)."""
    if spec.kind == "tiny":
        from synthset.generators.tiny import TinyDiffusionGenerator

        model = Path(spec.model) if spec.model else adapted_model
        if model is None or not model.exists():
            raise SynthsetError(
                f"generate.generator.model: no tiny model at {model}; run 'synthset adapt' first"
            )
        return TinyDiffusionGenerator(model, spec, root)
    if spec.kind == "text2image":
        from synthset.generators.text2image import Text2ImageGenerator

        return Text2ImageGenerator(spec)
    if spec.kind == "img2img":
        from synthset.generators.img2img import Img2ImgGenerator

        return Img2ImgGenerator(spec, root)
    if spec.kind == "inpaint":
        from synthset.generators.inpaint import InpaintGenerator

        return InpaintGenerator(spec, root)
    raise SynthsetError(f"generate.generator.kind: unknown kind {spec.kind!r}")
