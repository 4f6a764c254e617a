"""Training of the embedded tiny class-conditional diffusion model (a plain PyTorch loop).

The model is a diffusers ``UNet2DModel`` with one class embedding per class plus a *null* class
(label dropout → classifier-free guidance), trained with the ε-prediction MSE loss of a
``DDPMScheduler``. The artifact is a folder the tiny generator loads with ``from_pretrained``::

    <out_dir>/unet/               EMA weights (safetensors)
    <out_dir>/scheduler/          the training noise schedule
    <out_dir>/synthset_model.json classes, null class id, image channels and sizes

Training is resumable: every ``checkpoint_every`` steps the whole training state (model, EMA,
optimizer, step, random generators) is written atomically to ``<out_dir>.state.pt``; a rerun
continues from it and ends with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from synthset.classes import ClassInfo
from synthset.data.images import common_format, open_image
from synthset.data.splits import Samples
from synthset.errors import SynthsetError
from synthset.recipe import AdaptSpec

META_FILE = "synthset_model.json"
GRAD_CLIP = 1.0
WEIGHT_DECAY = 0.0


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
        self.spec = spec

    def fit(
        self,
        train: Samples,
        classes: list[ClassInfo],
        out_dir: Path,
        seed: int,
        progress: bool = True,
    ) -> None:
        train_tiny_diffusion(self.spec, train, len(classes), out_dir, seed, progress)

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


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """EMA of the weights with a warm-up: the effective decay grows from 0.1 towards ``decay``."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    ema_params = [p for p in ema.parameters()]
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - d)


def learning_rate(spec: AdaptSpec, step: int) -> float:
    """Linear warm-up, then constant (depends on the step only, so resuming is exact)."""
    if spec.warmup_steps <= 0:
        return spec.lr
    return spec.lr * min(1.0, (step + 1) / spec.warmup_steps)


# ----------------------------------------------------------------------------- state


def state_path(out_dir: Path) -> Path:
    """Where the resumable training state of ``out_dir`` lives."""
    return out_dir.parent / (out_dir.name + ".state.pt")


def _fingerprint(spec: AdaptSpec, num_classes: int, seed: int, data: ImageTensor) -> str:
    """What a saved state must match to be resumed (everything but steps, checkpointing, device)."""
    keep = spec.model_dump(mode="json", exclude={"steps", "checkpoint_every", "device"})
    blob = json.dumps(
        {
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


def _save_state(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temp file next to ``path``, then rename over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove_leftovers(out_dir: Path) -> None:
    """Delete temp files and folders a killed run left next to ``out_dir``."""
    for tmp in out_dir.parent.glob(f".{out_dir.name}.*"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _load_state(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The saved state if it belongs to this training, else ``None`` (it is then overwritten)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a corrupt state is no worse than none: start over
        return None
    return state if state.get("fingerprint") == fingerprint else None


# ----------------------------------------------------------------------------- training


def train_tiny_diffusion(
    spec: AdaptSpec,
    train: Samples,
    num_classes: int,
    out_dir: Path,
    seed: int,
    progress: bool = True,
    stop_after: int | None = None,
) -> Path:
    """Train the tiny class-conditional diffusion model on ``train`` and save it to ``out_dir``.

    ``stop_after`` ends the run after that step, leaving only the resumable state behind (as a
    kill would; for time-boxed jobs and tests); the next call continues from it. Returns
    ``out_dir`` (which exists only once all ``spec.steps`` are done).
    """
    from synthset.devices import resolve_device

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)
    device = resolve_device(spec.device)
    data = load_images(train, spec.image_size)
    images, labels = data.images.to(device), data.labels.to(device)
    if int(labels.max()) >= num_classes or int(labels.min()) < 0:
        raise SynthsetError(f"adapt: labels must be in 0..{num_classes - 1}")

    torch.manual_seed(seed)
    model = build_unet(spec, data.channels, num_classes).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    noise_sched = build_noise_scheduler(spec)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=WEIGHT_DECAY)
    gen = torch.Generator(device="cpu").manual_seed(seed)

    fingerprint = _fingerprint(spec, num_classes, seed, data)
    spath = state_path(out_dir)
    step = 0
    state = _load_state(spath, fingerprint)
    if state is not None and int(state["step"]) <= spec.steps:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])

    alphas = noise_sched.alphas_cumprod.to(device)
    end = spec.steps if stop_after is None else min(spec.steps, stop_after)
    model.train()
    bar = tqdm(total=spec.steps, initial=step, desc="adapt", disable=not progress, leave=False)
    while step < end:
        loss = _train_step(model, optimizer, images, labels, alphas, spec, num_classes, gen, step)
        step += 1
        ema_update(ema, model, spec.ema_decay, step)
        bar.update(1)
        if step % 25 == 0 or step == end:
            bar.set_postfix(loss=f"{loss:.4f}")
        if step < spec.steps and (step % spec.checkpoint_every == 0 or step == end):
            _save_state(
                spath,
                {
                    "fingerprint": fingerprint,
                    "step": step,
                    "model": model.state_dict(),
                    "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                },
            )
    bar.close()
    if step < spec.steps:
        return out_dir
    _save_model(ema, noise_sched, data, num_classes, spec, out_dir)
    spath.unlink(missing_ok=True)
    return out_dir


def _train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    spec: AdaptSpec,
    num_classes: int,
    gen: torch.Generator,
    step: int,
) -> float:
    """One optimisation step on a random batch; all randomness comes from ``gen``."""
    device = images.device
    n = images.shape[0]
    idx = torch.randint(0, n, (spec.batch_size,), generator=gen)
    x0 = images[idx.to(device)]
    y = labels[idx.to(device)]
    b = x0.shape[0]
    t = torch.randint(0, spec.num_train_timesteps, (b,), generator=gen).to(device)
    noise = torch.randn(x0.shape, generator=gen).to(device)
    drop = (torch.rand(b, generator=gen) < spec.cond_dropout).to(device)
    y = torch.where(drop, torch.full_like(y, num_classes), y)
    a = alphas_cumprod[t].view(b, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    pred = model(xt, t, class_labels=y).sample
    loss = torch.nn.functional.mse_loss(pred, noise)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(spec, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    return float(loss.detach())


def _save_model(
    ema: Any, noise_sched: Any, data: ImageTensor, num_classes: int, spec: AdaptSpec, out_dir: Path
) -> None:
    """Write the EMA UNet, the scheduler and the metadata to a temp folder, then rename it."""
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the model is an ordinary output folder
    try:
        ema.to("cpu").save_pretrained(tmp / "unet", safe_serialization=True)
        noise_sched.save_pretrained(tmp / "scheduler")
        meta = {
            "num_classes": num_classes,
            "null_class": num_classes,
            "channels": data.channels,
            "native_size": list(data.native_size),
            "image_size": spec.image_size,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
