"""Text-to-image with any diffusers pipeline (SD 1.x/2.x, SDXL, SD3, Flux, PixArt, turbo, ...).

The model is loaded with ``diffusers.AutoPipelineForText2Image.from_pretrained`` — the same call
users run themselves — from a hub id (or its local cache) or a local pipeline folder. Each batch
is one pipeline call with one seeded ``torch.Generator`` per image, so an image depends only on
its own item (seed, prompt) and the batch it runs in.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from synthset.devices import resolve_device, resolve_dtype
from synthset.errors import SynthsetError, first_line
from synthset.generators.base import item_generators
from synthset.generators.embeddings import PromptEmbeddings
from synthset.generators.pipeline_setup import configure, load_extras
from synthset.generators.schedulers import make_scheduler, scheduler_class
from synthset.pipeline_loading import load_pipeline
from synthset.prompts.base import with_class_token

if TYPE_CHECKING:
    from synthset.plan import WorkItem
    from synthset.recipe import GeneratorSpec

_FIELD = "generate.generator.model"


class Text2ImageGenerator:
    """Generates one image per work item from its prompt with a diffusers text-to-image pipeline.

    The safety checker is never loaded (``safety_checker=None``): a synthetic dataset should not
    contain silently blacked-out images. Subclasses turn the loaded pipeline into another mode's
    with ``from_pipe`` (:meth:`for_mode`), so the weights load once.
    """

    mode = "text2image"

    def __init__(self, spec: GeneratorSpec, root: Path | None = None) -> None:
        if not spec.model:
            raise SynthsetError(f"{_FIELD}: {self.mode} needs a model (hub id or local folder)")
        if spec.scheduler:
            scheduler_class(spec.scheduler)  # fail on a bad name before loading any weights
        self.spec = spec
        self.root = root
        self.name = f"{self.mode}:{spec.model}"
        self.device = resolve_device(spec.device)
        self.dtype = resolve_dtype(spec.dtype, self.device)
        self.embeddings = PromptEmbeddings(spec.prompt_embeds) if spec.prompt_embeds else None
        pipe = load_pipeline(spec.model, dtype=self.dtype, variant=spec.variant)
        if spec.scheduler:
            pipe.scheduler = make_scheduler(spec.scheduler, pipe.scheduler.config)
        load_extras(pipe, spec)
        self.pipe = self.for_mode(pipe)
        configure(self.pipe, spec, self.device, self.dtype)
        self.pipe.set_progress_bar_config(disable=True)
        self._call_params = set(inspect.signature(self.pipe.__call__).parameters)
        if (
            self.embeddings is not None
            and spec.negative_prompt
            and self.embeddings.has_unconditional
        ):
            raise SynthsetError(
                f"generate.generator.negative_prompt: {spec.prompt_embeds} brings its own "
                "unconditional input (__unconditional__); remove negative_prompt"
            )
        if self.embeddings is not None and "prompt_embeds" not in self._call_params:
            raise SynthsetError(
                f"generate.generator.prompt_embeds: {type(self.pipe).__name__} takes no "
                "prompt_embeds; remove the field or use an SD, SDXL, SD3, Flux or PixArt model"
            )

    def for_mode(self, pipe: Any) -> Any:
        """The pipeline this mode calls, made from the loaded text-to-image one."""
        return pipe

    def prompt_of(self, item: WorkItem) -> str:
        """The item's prompt, its class name replaced by the class's learned token if any."""
        token = self.spec.class_tokens.get(item.class_name)
        return with_class_token(item.prompt, item.class_name, token) if token else item.prompt

    def call_kwargs(self, items: Sequence[WorkItem], **more: Any) -> dict[str, Any]:
        """The pipeline's arguments for one batch, keeping only those its ``__call__`` accepts."""
        spec = self.spec
        kwargs: dict[str, Any] = {
            "num_inference_steps": spec.steps,
            "guidance_scale": spec.guidance_scale,
            "generator": item_generators(items, self.device),
            "output_type": "pil",
            "num_images_per_prompt": 1,
        }
        if self.embeddings is not None:
            kwargs.update(self.embeddings.kwargs(items, self.device, self.dtype))
        else:
            kwargs["prompt"] = [self.prompt_of(it) for it in items]
        if spec.negative_prompt is not None:
            kwargs["negative_prompt"] = [spec.negative_prompt] * len(items)
        if spec.height is not None:
            kwargs["height"] = spec.height
        if spec.width is not None:
            kwargs["width"] = spec.width
        kwargs.update(more)
        return {k: v for k, v in kwargs.items() if k in self._call_params}

    def call_pipe(self, kwargs: dict[str, Any]) -> list[Image.Image]:
        """The pipeline's images for one call; inputs it refuses become a one-line error."""
        try:
            return list(self.pipe(**kwargs).images)
        except (ValueError, TypeError) as exc:
            raise SynthsetError(
                f"{self.name}: the {type(self.pipe).__name__} refused the batch: "
                f"{first_line(exc)}; check generate.generator for this model family"
            ) from None

    def generate(self, items: Sequence[WorkItem]) -> list[Image.Image]:
        """One image per item, in order, from a single pipeline call."""
        import torch

        if not items:
            return []
        with torch.inference_mode():
            images = self.call_pipe(self.call_kwargs(items))
        if len(images) != len(items):
            raise SynthsetError(
                f"{self.name}: the pipeline returned {len(images)} images for {len(items)} prompts"
            )
        return [img if img.mode == "RGB" else img.convert("RGB") for img in images]
