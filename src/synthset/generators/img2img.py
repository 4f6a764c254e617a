"""Image-to-image "noise then denoise" of real images with any diffusers pipeline.

The text-to-image pipeline is loaded once (:class:`Text2ImageGenerator`) and turned into an
image-to-image one with ``AutoPipelineForImage2Image.from_pipe`` (same weights, no reload).
Each item's real image is noised to ``strength`` and denoised towards the item's prompt; the
real image's class is the label. One pipeline call per distinct strength in a batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from synthset.errors import SynthsetError
from synthset.generators.base import item_generators
from synthset.generators.realimages import load_real_image, work_size

if TYPE_CHECKING:
    from synthset.plan import WorkItem
    from synthset.recipe import GeneratorSpec


def by_strength(
    items: Sequence[WorkItem], run: Callable[[list[int], float], list[Image.Image]]
) -> list[Image.Image]:
    """Run ``run(indices, strength)`` once per distinct strength; images back in item order."""
    out: list[Image.Image | None] = [None] * len(items)
    groups: dict[float, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(float(it.params.get("strength", 1.0)), []).append(i)
    for strength in sorted(groups):
        idx = groups[strength]
        for i, img in zip(idx, run(idx, strength), strict=True):
            out[i] = img
    return [img for img in out if img is not None]


class Img2ImgGenerator:
    """One image per (real image, variant) item: ``strength`` of noise, then denoising."""

    pipeline_class = "AutoPipelineForImage2Image"
    mode = "img2img"

    def __init__(self, spec: GeneratorSpec, root: Path | None = None) -> None:
        import diffusers

        from synthset.generators.text2image import Text2ImageGenerator

        base = Text2ImageGenerator(spec)  # loads the weights once, sets scheduler and device
        auto = getattr(diffusers, self.pipeline_class)
        try:
            self.pipe = auto.from_pipe(base.pipe)
        except (ValueError, KeyError) as exc:
            raise SynthsetError(
                f"generate.generator.model: {spec.model!r} has no {self.mode} pipeline "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            ) from None
        self.pipe.set_progress_bar_config(disable=True)
        self._call_params = set(inspect.signature(self.pipe.__call__).parameters)
        self.spec = spec
        self.root = root
        self.device = base.device
        self.name = f"{self.mode}:{spec.model}"

    def _kwargs(self, items: list[WorkItem], strength: float, **more: Any) -> dict[str, Any]:
        """The pipeline's arguments for one group, keeping only those its ``__call__`` takes."""
        kwargs: dict[str, Any] = {
            "prompt": [it.prompt for it in items],
            "num_inference_steps": self.spec.steps,
            "guidance_scale": self.spec.guidance_scale,
            "strength": strength,
            "generator": item_generators(items, self.device),
            "output_type": "pil",
        }
        if self.spec.negative_prompt is not None:
            kwargs["negative_prompt"] = [self.spec.negative_prompt] * len(items)
        kwargs.update(more)
        return {k: v for k, v in kwargs.items() if k in self._call_params}

    def _run(self, items: list[WorkItem], strength: float) -> list[Image.Image]:
        images = [load_real_image(it, self.root) for it in items]
        size = work_size(images[0], self.spec.width, self.spec.height)
        images = [img.resize(size, Image.Resampling.LANCZOS) for img in images]
        out = self.pipe(**self._kwargs(items, strength, image=images)).images
        return [img.convert("RGB") for img in out]

    def generate(self, items: Sequence[WorkItem]) -> list[Image.Image]:
        """One image per item, in order."""
        import torch

        if not items:
            return []
        with torch.inference_mode():
            return by_strength(items, lambda idx, s: self._run([items[i] for i in idx], s))
