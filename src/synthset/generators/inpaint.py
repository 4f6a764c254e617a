"""Inpainting of real images: keep the object, regenerate the background (or the reverse).

The object mask (white = object) comes from a mask folder parallel to the real ImageFolder, a
fractional box, or a simple saliency mask (:func:`saliency_mask`). The pipeline repaints the
background (``invert_mask: true``: the object); afterwards the kept region is pasted back from
the real image, so its pixels are exactly the input's (up to resizing to the working size).
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from synthset.generators.base import SideFile
from synthset.generators.img2img import Img2ImgGenerator
from synthset.generators.realimages import (
    box_mask,
    folder_mask,
    load_real_image,
    saliency_mask,
    work_size,
)
from synthset.plan import WorkItem
from synthset.store.labels import OBJECT_MASK_FOLDER


class InpaintGenerator(Img2ImgGenerator):
    """An :class:`Img2ImgGenerator` whose pipeline repaints only the masked region."""

    pipeline_class = "AutoPipelineForInpainting"
    mode = "inpaint"
    #: Keep each item's object mask as a side file (``labels.method: inpaint_mask``).
    keeps_object_masks = False
    _kept: dict[str, bytes]

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
        if self.keeps_object_masks:
            self._keep_object_masks(items, masks)
        return [
            Image.composite(gen.convert("RGB").resize(size), img, m)
            for gen, img, m in zip(out, images, masks, strict=True)
        ]

    def _keep_object_masks(self, items: list[WorkItem], repaint: list[Image.Image]) -> None:
        """The object (white) of each item at the working size, as PNG bytes."""
        from synthset.store.imagefolder import encode_image

        kept = getattr(self, "_kept", {})
        for it, mask in zip(items, repaint, strict=True):
            obj = mask if self.spec.invert_mask else mask.point(lambda p: 255 - p)
            kept[it.item_id] = encode_image(obj.convert("L"), "png")
        self._kept = kept

    def side_files(self, item: WorkItem) -> list[SideFile]:
        """The item's object mask from its batch (when masks are kept)."""
        if not self.keeps_object_masks:
            return []
        return [SideFile(OBJECT_MASK_FOLDER, ".png", self._kept.pop(item.item_id))]


def keep_object_masks(
    generator: InpaintGenerator, labels: object, class_names: object
) -> InpaintGenerator:
    """The inpaint generator, keeping each image's object mask (its label); a label recorder
    (see ``generators.registry.LABEL_RECORDERS``)."""
    generator.keeps_object_masks = True
    return generator
