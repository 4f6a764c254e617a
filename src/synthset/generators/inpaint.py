"""Inpainting of real images: keep the object, regenerate the background (or the reverse).

The object mask (white = object) comes from a mask folder parallel to the real ImageFolder, a
fractional box, or a simple saliency mask (:func:`saliency_mask`). The pipeline repaints the
background (``invert_mask: true``: the object); afterwards the kept region is pasted back from
the real image, so its pixels are exactly the input's (up to resizing to the working size).
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from synthset.generators.img2img import Img2ImgGenerator
from synthset.generators.realimages import (
    box_mask,
    folder_mask,
    load_real_image,
    saliency_mask,
    work_size,
)
from synthset.plan import WorkItem


class InpaintGenerator(Img2ImgGenerator):
    """An :class:`Img2ImgGenerator` whose pipeline repaints only the masked region."""

    pipeline_class = "AutoPipelineForInpainting"
    mode = "inpaint"

    def object_mask(self, item: WorkItem, image: Image.Image) -> Image.Image:
        """White where the object is, at the real image's own size."""
        spec = self.spec
        if spec.mask == "folder":
            return folder_mask(item, self.root, image.size)
        if spec.mask == "box":
            assert spec.mask_box is not None
            return box_mask(image.size, spec.mask_box)
        return saliency_mask(image)

    def repaint_mask(self, item: WorkItem, image: Image.Image) -> Image.Image:
        """White where the pipeline regenerates: the background, or the object if inverted."""
        mask = self.object_mask(item, image)
        return mask if self.spec.invert_mask else mask.point(lambda p: 255 - p)

    def _run(self, items: list[WorkItem], strength: float) -> list[Image.Image]:
        originals = [load_real_image(it, self.root) for it in items]
        masks = [self.repaint_mask(it, img) for it, img in zip(items, originals, strict=True)]
        size = work_size(originals[0], self.spec.width, self.spec.height)
        images = [img.resize(size, Image.Resampling.LANCZOS) for img in originals]
        masks = [m.resize(size, Image.Resampling.NEAREST) for m in masks]
        kwargs: dict[str, Any] = self.call_kwargs(
            items, image=images, mask_image=masks, strength=strength, height=size[1], width=size[0]
        )
        out = self.call_pipe(kwargs)
        return [
            Image.composite(gen.convert("RGB").resize(size), img, m)
            for gen, img, m in zip(out, images, masks, strict=True)
        ]
