"""Training of the embedded tiny class-conditional diffusion model (a plain PyTorch loop).

The model is a diffusers ``UNet2DModel`` with one class embedding per class plus a *null* class
(label dropout → classifier-free guidance), trained with the ε-prediction MSE loss of a
``DDPMScheduler``. The artifact is a folder the tiny generator loads with ``from_pretrained``::

    <out_dir>/unet/               EMA weights (safetensors)
    <out_dir>/scheduler/          the training noise schedule
    <out_dir>/synthset_model.json classes, null class id, image channels and sizes

Training runs in the shared loop (:mod:`synthset.adapt.training`): resumable from
``<out_dir>.state.pt`` to exactly the weights of an uninterrupted run, EMA, validation loss,
training curve.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from synthset.adapt.base import AdaptData
from synthset.adapt.training import loop_settings, train
from synthset.data.images import common_format, open_image
from synthset.data.splits import Samples
from synthset.errors import SynthsetError
from synthset.recipe import AdaptSpec

META_FILE = "synthset_model.json"
GRAD_CLIP = 1.0


@dataclass(frozen=True)
class ImageTensor:
    """All training images in one tensor (N, C, S, S) in [-1, 1], with their labels."""

    images: torch.Tensor
    labels: torch.Tensor
    channels: int
    native_size: tuple[int, int]


class TinyDiffusionAdapter:
    """``adapt.method: tiny_diffusion``: train the tiny class-conditional model from scratch on
    the real train split; the tiny generator loads the folder it writes."""

    def __init__(self, spec: AdaptSpec) -> None:
        self.spec = spec.resolved()

    def fit(self, data: AdaptData, out_dir: Path, seed: int, progress: bool = True) -> None:
        train_tiny_diffusion(
            self.spec, data.train, len(data.classes), out_dir, seed, progress, val=data.val
        )

    def generator_inputs(self, out_dir: Path) -> dict[str, Any]:
        return {"model": str(out_dir)}


# ----------------------------------------------------------------------------- data


def load_images(train: Samples, image_size: int) -> ImageTensor:
    """Read every training image once, resized to ``image_size`` and scaled to [-1, 1].

    Every image is read by the one reader of all stages (:mod:`synthset.data.images`); the mode
    (``L`` or ``RGB``) and the native size (width, height) are the set's most common ones.
    """
    if not train:
        raise SynthsetError("adapt: the real train split is empty; add training images")
    fmt = common_format([path for path, _ in train], "adapt: real train")
    arrays = []
    for path, _ in train:
        img = open_image(path, fmt.mode, "adapt: real train")
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(img, dtype=np.uint8))
    data = torch.from_numpy(np.stack(arrays)).float()
    data = data.unsqueeze(1) if fmt.mode == "L" else data.permute(0, 3, 1, 2)
    labels = torch.tensor([int(lbl) for _, lbl in train], dtype=torch.long)
    return ImageTensor(data / 127.5 - 1.0, labels, fmt.channels, fmt.size)


# ----------------------------------------------------------------------------- model


def build_unet(spec: AdaptSpec, image_channels: int, num_classes: int) -> Any:
    """A small class-conditional ``UNet2DModel``; class id ``num_classes`` is the null class."""
    from diffusers import UNet2DModel

    chans = tuple(spec.channels)
    groups = min(32, math.gcd(*chans))
    levels = len(chans)
    if spec.image_size % 2 ** (levels - 1):
        raise SynthsetError(
            f"adapt.image_size: {spec.image_size} is not divisible by 2^{levels - 1} "
            f"(needed by {levels} channel levels); use a multiple of {2 ** (levels - 1)}"
        )
    down = ["DownBlock2D"] * levels
    up = ["UpBlock2D"] * levels
    if spec.attention and levels > 1:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=spec.image_size,
        in_channels=image_channels,
        out_channels=image_channels,
        block_out_channels=chans,
        layers_per_block=spec.layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=groups,
        attention_head_dim=min(chans[-1], 32),
        num_class_embeds=num_classes + 1,
    )


def build_noise_scheduler(spec: AdaptSpec) -> Any:
    """The training noise schedule (DDPM, linear betas)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=spec.num_train_timesteps, clip_sample=True)


def _fingerprint(spec: AdaptSpec, num_classes: int, seed: int, data: ImageTensor) -> str:
    """What a saved state must match to be resumed (everything but steps, checkpointing, device)."""
    keep = spec.model_dump(
        mode="json", exclude={"steps", "checkpoint_every", "keep_checkpoints", "device"}
    )
    blob = json.dumps(
        {
            "loop": 2,
            "spec": keep,
            "classes": num_classes,
            "seed": seed,
            "n": len(data.labels),
            "shape": list(data.images.shape),
            "sum": float(data.images.double().sum()),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- training


def train_tiny_diffusion(
    spec: AdaptSpec,
    train_set: Samples,
    num_classes: int,
    out_dir: Path,
    seed: int,
    progress: bool = True,
    stop_after: int | None = None,
    val: Samples | None = None,
) -> Path:
    """Train the tiny class-conditional diffusion model on ``train_set`` and save it to
    ``out_dir`` (which exists only once all ``spec.steps`` are done).

    ``stop_after`` ends the run after that step, leaving only the resumable state behind (as a
    kill would; for time-boxed jobs and tests); the next call continues from it.
    """
    from synthset.devices import resolve_device

    spec = spec.resolved()
    out_dir = Path(out_dir)
    device = resolve_device(spec.device)
    data = load_images(train_set, spec.image_size)
    if int(data.labels.max()) >= num_classes or int(data.labels.min()) < 0:
        raise SynthsetError(f"adapt: labels must be in 0..{num_classes - 1}")
    held_out = load_images(val, spec.image_size) if val and spec.validate_every else None
    torch.manual_seed(seed)
    task = TinyTask(spec, data, num_classes, device, held_out)
    settings = replace(loop_settings(spec), grad_clip=GRAD_CLIP, desc="adapt")
    fingerprint = _fingerprint(spec, num_classes, seed, data)
    train(task, settings, out_dir, fingerprint, seed, progress, stop_after)
    return out_dir


class TinyTask:
    """The tiny model's training task: ε-prediction MSE with label dropout for CFG."""

    def __init__(
        self,
        spec: AdaptSpec,
        data: ImageTensor,
        num_classes: int,
        device: torch.device,
        val: ImageTensor | None = None,
    ) -> None:
        self.spec, self.data, self.num_classes, self.device = spec, data, num_classes, device
        self.model = build_unet(spec, data.channels, num_classes).to(device)
        self.model.train()
        self.noise_sched = build_noise_scheduler(spec)
        self.alphas = self.noise_sched.alphas_cumprod.to(device)
        self.images, self.labels = data.images.to(device), data.labels.to(device)
        self.val = val

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())

    def _loss(
        self, x0: torch.Tensor, y: torch.Tensor, gen: torch.Generator, dropout: bool
    ) -> torch.Tensor:
        b, device = x0.shape[0], self.device
        t = torch.randint(0, self.spec.num_train_timesteps, (b,), generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        if dropout:
            drop = (torch.rand(b, generator=gen) < self.spec.cond_dropout).to(device)
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        a = self.alphas[t].view(b, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = self.model(xt, t, class_labels=y).sample
        return torch.nn.functional.mse_loss(pred, noise)

    def loss(self, gen: torch.Generator) -> torch.Tensor:
        """One random batch; all randomness comes from ``gen``."""
        assert self.spec.batch_size is not None
        idx = torch.randint(0, self.images.shape[0], (self.spec.batch_size,), generator=gen)
        idx = idx.to(self.device)
        return self._loss(self.images[idx], self.labels[idx], gen, dropout=True)

    @torch.no_grad()
    def validation_loss(self) -> float | None:
        """Mean loss over the val images with fixed noise and timesteps."""
        if self.val is None:
            return None
        self.model.eval()
        gen = torch.Generator().manual_seed(0)
        images, labels = self.val.images.to(self.device), self.val.labels.to(self.device)
        losses = [
            float(self._loss(images[i : i + 256], labels[i : i + 256], gen, dropout=False))
            for i in range(0, len(labels), 256)
        ]
        self.model.train()
        return sum(losses) / len(losses)

    def save(self, out_dir: Path) -> None:
        """The UNet, the scheduler and the metadata the tiny generator reads."""
        model = self.model
        model.save_pretrained(out_dir / "unet", safe_serialization=True)
        self.noise_sched.save_pretrained(out_dir / "scheduler")
        meta = {
            "num_classes": self.num_classes,
            "null_class": self.num_classes,
            "channels": self.data.channels,
            "native_size": list(self.data.native_size),
            "image_size": self.spec.image_size,
        }
        (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
