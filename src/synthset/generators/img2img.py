"""Image-to-image "noise then denoise" of real images with any diffusers pipeline.

The text-to-image pipeline is loaded once (:class:`Text2ImageGenerator`) and turned into an
image-to-image one with ``AutoPipelineForImage2Image.from_pipe`` (same weights, no reload).
Each item's real image is noised to ``strength`` and denoised towards the item's prompt; the
real image's class is the label. One pipeline call per distinct strength in a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from PIL import Image

from synthset.errors import SynthsetError, first_line
from synthset.generators.realimages import by_strength, load_real_image, work_size
from synthset.generators.text2image import Text2ImageGenerator

if TYPE_CHECKING:
    from synthset.plan import WorkItem


class Img2ImgGenerator(Text2ImageGenerator):
    """One image per (real image, variant) item: ``strength`` of noise, then denoising."""

    pipeline_class = "AutoPipelineForImage2Image"
    mode = "img2img"

    def for_mode(self, pipe: Any) -> Any:
        """The image-to-image pipeline sharing the loaded text-to-image one's weights."""
        import diffusers

        auto = getattr(diffusers, self.pipeline_class)
        try:
            return auto.from_pipe(pipe)
        except (ValueError, KeyError) as exc:
            raise SynthsetError(
                f"generate.generator.model: {self.spec.model!r} has no {self.mode} pipeline "
                f"({first_line(exc)})"
            ) from None

    def _run(self, items: list[WorkItem], strength: float) -> list[Image.Image]:
        images = [load_real_image(it, self.root) for it in items]
        size = work_size(images[0], self.spec.width, self.spec.height)
        images = [img.resize(size, Image.Resampling.LANCZOS) for img in images]
        kwargs = self.call_kwargs(
            items, image=images, strength=strength, width=size[0], height=size[1]
        )
        return [img.convert("RGB") for img in self.call_pipe(kwargs)]

    def generate(self, items: Sequence[WorkItem]) -> list[Image.Image]:
        """One image per item, in order."""
        import torch

        if not items:
            return []
        with torch.inference_mode():
            return by_strength(items, lambda idx, s: self._run([items[i] for i in idx], s))
