"""A pretrained diffusers text-to-image pipeline taken apart for training (SD 1.x/2.x, SDXL).

The pipeline loads with the same ``from_pretrained`` call the generators use. Everything is
frozen; a method un-freezes or adds what it trains. Real images are encoded to latents once
(the VAE posterior's mean) and the denoising loss uses the scheduler's own training target:
ε (``epsilon``), v (``v_prediction``) or x₀ (``sample``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from synthset.data.images import open_image
from synthset.data.splits import Samples
from synthset.errors import SynthsetError
from synthset.pipeline_loading import load_pipeline

_FIELD = "adapt.base"
ENCODE_BATCH = 32


class PipelineParts:
    """The UNet, VAE, tokenizer(s), text encoder(s) and a DDPM training schedule of a pipeline."""

    def __init__(self, base: str, device: torch.device, resolution: int | None = None) -> None:
        from diffusers import DDPMScheduler

        pipe = load_pipeline(base, dtype=torch.float32, field=_FIELD)
        missing = [n for n in ("unet", "vae", "tokenizer", "text_encoder") if not _has(pipe, n)]
        if missing:
            raise SynthsetError(
                f"{_FIELD}: {type(pipe).__name__} has no {missing[0]}; this method adapts UNet "
                "text-to-image pipelines (Stable Diffusion 1.x/2.x or SDXL)"
            )
        self.pipe = pipe
        self.device = device
        self.unet = pipe.unet
        self.vae = pipe.vae
        self.is_xl = _has(pipe, "text_encoder_2")
        self.tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if self.is_xl else [])
        self.text_encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if self.is_xl else [])
        for module in (self.unet, self.vae, *self.text_encoders):
            module.requires_grad_(False)
            module.to(device)
            module.eval()
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.prediction_type = self.noise_scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise SynthsetError(
                f"{_FIELD}: unknown prediction_type {self.prediction_type!r} in the scheduler"
            )
        self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = resolution or int(self.unet.config.sample_size) * self.vae_factor
        if self.resolution % (8 if self.vae_factor > 1 else 1):
            raise SynthsetError(f"adapt.resolution: {self.resolution} is not a multiple of 8")
        self.scaling = float(getattr(self.vae.config, "scaling_factor", 1.0) or 1.0)

    # ------------------------------------------------------------------------- images

    def pixels(self, samples: Samples, what: str) -> torch.Tensor:
        """The images of ``samples`` as RGB in [-1, 1] at the training resolution."""
        size = (self.resolution, self.resolution)
        arrays = []
        for path, _ in samples:
            img = open_image(path, "RGB", what)
            if img.size != size:
                img = img.resize(size, Image.Resampling.BICUBIC)
            arrays.append(np.asarray(img, dtype=np.float32))
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return x / 127.5 - 1.0

    @torch.no_grad()
    def latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """The VAE posterior means of ``pixels``, scaled as the UNet expects (on CPU)."""
        out = []
        for i in range(0, len(pixels), ENCODE_BATCH):
            batch = pixels[i : i + ENCODE_BATCH].to(self.device)
            out.append(self.vae.encode(batch).latent_dist.mean.cpu() * self.scaling)
        return torch.cat(out)

    # ------------------------------------------------------------------------- text

    def token_ids(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """The prompts' token ids for each tokenizer (padded to its max length)."""
        return [
            tok(
                list(prompts),
                padding="max_length",
                max_length=tok.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)
            for tok in self.tokenizers
        ]

    def encode(self, ids: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text conditioning as the pipeline computes it: SD takes the last hidden state; SDXL
        the penultimate of both encoders side by side plus the second's pooled projection."""
        if not self.is_xl:
            return self.text_encoders[0](ids[0])[0], None
        hidden, pooled = [], None
        for encoder, token_ids in zip(self.text_encoders, ids, strict=True):
            out = encoder(token_ids, output_hidden_states=True)
            pooled = out[0]
            hidden.append(out.hidden_states[-2])
        return torch.cat(hidden, dim=-1), pooled

    # ------------------------------------------------------------------------- denoising

    def loss(
        self,
        latents: torch.Tensor,
        embeds: torch.Tensor,
        pooled: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        """The denoising loss of ``latents`` under this conditioning; noise and timesteps come
        from ``gen``."""
        latents = latents.to(self.device)
        b = latents.shape[0]
        steps = self.noise_scheduler.config.num_train_timesteps
        t = torch.randint(0, steps, (b,), generator=gen).to(self.device)
        noise = torch.randn(latents.shape, generator=gen).to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        pred = self.predict(noisy, t, embeds, pooled)
        return torch.nn.functional.mse_loss(pred.float(), self.target(latents, noise, t).float())

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the UNet is trained to predict: ε, v or the clean latents."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, t)
        return latents

    def predict(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        embeds: torch.Tensor,
        pooled: torch.Tensor | None,
    ) -> torch.Tensor:
        """The UNet's output; SDXL also gets the pooled text and its size/crop time ids."""
        extra: dict[str, Any] = {}
        if self.is_xl:
            r = self.resolution
            ids = torch.tensor([[r, r, 0, 0, r, r]], dtype=embeds.dtype, device=self.device)
            extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": ids.repeat(len(t), 1)}
        return self.unet(noisy, t, encoder_hidden_states=embeds, **extra).sample


def _has(pipe: Any, name: str) -> bool:
    return getattr(pipe, name, None) is not None
