"""The embedded tiny class-conditional diffusion model (trained by ``synthset adapt``).

Sampling with classifier-free guidance: ``eps = eps_null + g * (eps_class - eps_null)``, the
conditional and null-class predictions computed in one forward pass of twice the batch.
Each item's starting noise (and any noise a stochastic scheduler adds) comes from its own
``torch.Generator`` seeded with the item's seed.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from synthset.adapt.tiny_diffusion import META_FILE
from synthset.devices import resolve_device, resolve_dtype
from synthset.errors import SynthsetError
from synthset.generators.base import item_generators
from synthset.generators.schedulers import make_scheduler

if TYPE_CHECKING:
    from synthset.plan import WorkItem
    from synthset.recipe import GeneratorSpec


class TinyDiffusionGenerator:
    """Generates images of class ``item.class_id`` from a tiny model folder written by adapt."""

    def __init__(self, spec: GeneratorSpec, root: Path | None = None) -> None:
        from diffusers import DDPMScheduler, UNet2DModel

        if not spec.model:
            raise SynthsetError(
                "generate.generator.model: 'tiny' needs a model folder; add an 'adapt' section "
                "(and run 'synthset adapt') or set generator.model"
            )
        model_path = Path(spec.model)
        meta_file = model_path / META_FILE
        if not meta_file.is_file():
            raise SynthsetError(
                f"generate.generator.model: {model_path} is not a tiny synthset model "
                f"(no {META_FILE}); run 'synthset adapt' to train one"
            )
        self.meta: dict[str, Any] = json.loads(meta_file.read_text(encoding="utf-8"))
        self.spec = spec
        self.root = root
        self.name = f"tiny:{model_path.name}"
        self.device = resolve_device(spec.device)
        self.dtype = resolve_dtype(spec.dtype, self.device)
        self.unet = UNet2DModel.from_pretrained(model_path / "unet", torch_dtype=self.dtype)
        self.unet.to(self.device)
        self.unet.eval()
        scheduler = DDPMScheduler.from_pretrained(model_path / "scheduler")
        if spec.scheduler:
            scheduler = make_scheduler(spec.scheduler, scheduler.config)
        self.scheduler = scheduler
        self.num_classes = int(self.meta["num_classes"])
        self.null_class = int(self.meta["null_class"])

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the returned images: spec height/width, else the native size."""
        native_w, native_h = self.meta["native_size"]
        return (self.spec.width or native_w, self.spec.height or native_h)

    def generate(self, items: Sequence[WorkItem]) -> list[Image.Image]:
        """One image per item, deterministic given the items (and the batch they form)."""
        if not items:
            return []
        bad = [it.class_id for it in items if not 0 <= it.class_id < self.num_classes]
        if bad:
            raise SynthsetError(
                f"tiny model {self.name} knows classes 0..{self.num_classes - 1}, got {bad[0]}; "
                "retrain it (synthset adapt) for this recipe's classes"
            )
        with torch.inference_mode():
            if self.spec.strength is None:
                x = self._sample(items)
            else:
                from synthset.generators.realimages import by_strength

                def run(idx: list[int], strength: float) -> list[Image.Image]:
                    sub = [items[i] for i in idx]
                    return [self._to_image(a) for a in _to_uint8(self._sample(sub, strength))]

                return by_strength(items, run)
        return [self._to_image(arr) for arr in _to_uint8(x)]

    def _real_batch(self, items: Sequence[WorkItem]) -> torch.Tensor:
        """The items' real images in [-1, 1] at the model's size and channels."""
        from synthset.generators.realimages import load_real_image

        cfg = self.unet.config
        mode = "L" if cfg.in_channels == 1 else "RGB"
        size = (cfg.sample_size, cfg.sample_size)
        arrs = [
            np.asarray(
                load_real_image(it, self.root, mode).resize(size, Image.Resampling.LANCZOS),
                dtype=np.float32,
            )
            for it in items
        ]
        x = torch.from_numpy(np.stack(arrs)).reshape(len(items), *size, cfg.in_channels)
        return (x.permute(0, 3, 1, 2) / 127.5 - 1.0).to(self.device, self.dtype)

    def _sample(self, items: Sequence[WorkItem], strength: float | None = None) -> torch.Tensor:
        """The denoising loop; returns images in [-1, 1] at the model's training size. With a
        ``strength``, start from the real images noised to the matching step (img2img)."""
        from diffusers.utils.torch_utils import randn_tensor

        cfg = self.unet.config
        scheduler = type(self.scheduler).from_config(self.scheduler.config)
        scheduler.set_timesteps(self.spec.steps, device=self.device)
        gens = item_generators(items, self.device)
        shape = (len(items), cfg.in_channels, cfg.sample_size, cfg.sample_size)
        x = randn_tensor(shape, generator=gens, device=self.device, dtype=self.dtype)
        timesteps = scheduler.timesteps
        if strength is None:
            x = x * scheduler.init_noise_sigma
        else:  # noise then denoise, as diffusers' img2img pipelines do
            n = min(max(int(round(self.spec.steps * strength)), 1), len(timesteps))
            timesteps = timesteps[len(timesteps) - n :]
            x = scheduler.add_noise(self._real_batch(items), x, timesteps[:1].repeat(len(items)))
        labels = torch.tensor([it.class_id for it in items], device=self.device)
        nulls = torch.full_like(labels, self.null_class)
        g = float(self.spec.guidance_scale)
        stochastic = "generator" in inspect.signature(scheduler.step).parameters
        extra = {"generator": gens} if stochastic else {}
        for t in timesteps:
            x_in = scheduler.scale_model_input(x, t)
            if g == 1.0:
                eps = self.unet(x_in, t, class_labels=labels).sample
            else:
                both = self.unet(
                    torch.cat([x_in, x_in]), t, class_labels=torch.cat([labels, nulls])
                ).sample
                eps_cond, eps_null = both.chunk(2)
                eps = eps_null + g * (eps_cond - eps_null)
            x = scheduler.step(eps, t, x, **extra).prev_sample
        return x.float().clamp(-1, 1).cpu()

    def _to_image(self, arr: np.ndarray) -> Image.Image:
        """A PIL image in the native mode (``L`` or ``RGB``) at :attr:`output_size`."""
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        size = self.output_size
        return img if img.size == size else img.resize(size, Image.Resampling.LANCZOS)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] → (B, H, W, C) uint8."""
    arr = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return arr.permute(0, 2, 3, 1).numpy()
