"""What the methods that adapt a pretrained pipeline share: real images as cached latents with
their classes' captions, the training task skeleton (a batch, its conditioning, the denoising
loss, a validation loss on the real val split) and the fit that runs it in the shared loop."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from synthset.adapt.base import AdaptData
from synthset.adapt.sd_parts import PipelineParts
from synthset.adapt.training import TrainingTask, check_precision, loop_settings, train
from synthset.classes import ClassInfo
from synthset.data.splits import Samples
from synthset.errors import SynthsetError
from synthset.recipe import AdaptSpec

META_FILE = "synthset_adapt.json"
VAL_BATCH = 64


@dataclass(frozen=True)
class CaptionedLatents:
    """Real images as latents (CPU), their labels, and the captions of every class."""

    latents: torch.Tensor
    labels: list[int]
    captions: dict[int, list[str]]

    def batch(self, gen: torch.Generator, size: int) -> tuple[torch.Tensor, list[str]]:
        """``size`` random images, each with a random caption of its class (all from ``gen``)."""
        idx = torch.randint(0, len(self.labels), (size,), generator=gen)
        prompts = []
        for i in idx.tolist():
            options = self.captions[self.labels[i]]
            prompts.append(options[int(torch.randint(0, len(options), (1,), generator=gen))])
        return self.latents[idx], prompts


def captioned_latents(
    parts: PipelineParts,
    samples: Samples,
    captions: dict[int, list[str]],
    what: str,
) -> CaptionedLatents:
    """Encode ``samples`` once; ``captions`` must hold at least one caption per class present."""
    return CaptionedLatents(
        parts.latents(parts.pixels(samples, what)), [lbl for _, lbl in samples], captions
    )


def class_captions(
    data: AdaptData, method: str, rewrite: Callable[[ClassInfo, str], str] | None = None
) -> dict[int, list[str]]:
    """Each class's prompts from the prompts stage (``rewrite`` applied), with a one-line error
    for a class that has none."""
    out: dict[int, list[str]] = {}
    for cls in data.classes:
        prompts = data.prompts.get(cls.id, [])
        if not prompts:
            raise SynthsetError(
                f"adapt.method {method}: class {cls.name!r} has no prompts to train on; add a "
                "'prompts' section (e.g. template: 'a photo of a {class}')"
            )
        out[cls.id] = [rewrite(cls, p) if rewrite else p for p in prompts]
    return out


class PipelineTask:
    """A :class:`~synthset.adapt.training.TrainingTask` over a pipeline's denoising loss; a
    method gives :meth:`condition` (captions → text conditioning) and its parameters."""

    def __init__(
        self,
        spec: AdaptSpec,
        parts: PipelineParts,
        train_set: CaptionedLatents,
        val_set: CaptionedLatents | None,
    ) -> None:
        self.spec, self.parts, self.train_set, self.val_set = spec, parts, train_set, val_set
        self.device = parts.device

    def condition(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The text conditioning of ``prompts`` (with gradients where the method trains it)."""
        raise NotImplementedError

    def parameters(self) -> list[torch.nn.Parameter]:
        raise NotImplementedError

    def save(self, out_dir: Path) -> None:
        raise NotImplementedError

    def loss(self, gen: torch.Generator) -> torch.Tensor:
        assert self.spec.batch_size is not None
        latents, prompts = self.train_set.batch(gen, self.spec.batch_size)
        embeds, pooled = self.condition(prompts)
        return self.parts.loss(latents, embeds, pooled, gen)

    @torch.no_grad()
    def validation_loss(self) -> float | None:
        """Mean loss over the val images, each with its class's first caption, fixed noise."""
        val = self.val_set
        if val is None or not val.labels:
            return None
        gen = torch.Generator().manual_seed(0)
        losses = []
        for i in range(0, len(val.labels), VAL_BATCH):
            labels = val.labels[i : i + VAL_BATCH]
            embeds, pooled = self.condition([val.captions[c][0] for c in labels])
            latents = val.latents[i : i + VAL_BATCH]
            losses.append(float(self.parts.loss(latents, embeds, pooled, gen)) * len(labels))
        return sum(losses) / len(val.labels)


def task_fingerprint(spec: AdaptSpec, data: AdaptData, seed: int) -> str:
    """What a saved training state (or a finished part of the training) must match to be
    reused: the settings (not the step count, checkpointing or device), the seed, the images,
    the captions and, for a local base folder, its listing (a retrained base at the same path
    restarts the training)."""
    from synthset.pipeline_loading import is_local_path
    from synthset.store.digests import folder_digest

    settings = spec.model_dump(
        mode="json", exclude={"steps", "checkpoint_every", "keep_checkpoints", "device"}
    )
    images = [[str(p), lbl, p.stat().st_size] for p, lbl in data.train]
    base = (
        folder_digest(Path(spec.base).expanduser())
        if spec.base and is_local_path(spec.base)
        else None
    )
    blob = json.dumps(
        {"spec": settings, "seed": seed, "images": images, "prompts": data.prompts, "base": base},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_inputs(spec: AdaptSpec, data: AdaptData) -> str:
    """A pipeline method needs a base and real train images (one-line errors); returns the
    base."""
    if spec.base is None:
        raise SynthsetError(
            f"adapt.base: method {spec.method} adapts a diffusers pipeline; set adapt.base (or "
            "generate.generator.model) to a hub id or folder"
        )
    if not data.train:
        raise SynthsetError("adapt: the real train split is empty; add training images")
    return spec.base


def fit_pipeline_task(
    spec: AdaptSpec,
    data: AdaptData,
    out_dir: Path,
    seed: int,
    progress: bool,
    make_task: Callable[[PipelineParts], TrainingTask],
    stop_after: int | None = None,
) -> bool:
    """Load the base pipeline, build the method's task with the global RNG seeded (its new
    weights start the same every time) and train it in the shared loop."""
    from synthset.devices import resolve_device

    base = check_inputs(spec, data)
    device = resolve_device(spec.device)
    check_precision(spec.mixed_precision, device)
    parts = PipelineParts(base, device, spec.resolution)
    torch.manual_seed(seed)
    task = make_task(parts)
    fingerprint = task_fingerprint(spec, data, seed)
    settings = loop_settings(spec, latent_size=parts.resolution // parts.vae_factor)
    return train(task, settings, out_dir, fingerprint, seed, progress, stop_after)


def write_meta(out_dir: Path, spec: AdaptSpec, classes: list[ClassInfo], **more: Any) -> None:
    """``synthset_adapt.json``: which method made the artifact, from which base, for which
    classes, and method details."""
    meta = {"method": spec.method, "base": spec.base, "classes": [c.name for c in classes]}
    (out_dir / META_FILE).write_text(json.dumps(meta | more, indent=2) + "\n", encoding="utf-8")


def meta_value(out_dir: Path, key: str) -> Any:
    """A value from an artifact's ``synthset_adapt.json`` (None when absent or unreadable)."""
    try:
        return json.loads((Path(out_dir) / META_FILE).read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError):
        return None


class PipelineAdapter:
    """An adapter whose training is a :class:`PipelineTask` (``task_class``) on ``adapt.base``."""

    task_class: type[PipelineTask]

    def __init__(self, spec: AdaptSpec) -> None:
        self.spec = spec.resolved()

    def fit(
        self,
        data: AdaptData,
        out_dir: Path,
        seed: int,
        progress: bool = True,
        stop_after: int | None = None,
    ) -> bool:
        """Train on ``data`` into ``out_dir``; True once the artifact is written."""
        make = self.task_class
        return fit_pipeline_task(
            self.spec,
            data,
            out_dir,
            seed,
            progress,
            lambda parts: make(self.spec, parts, data),  # type: ignore[call-arg]
            stop_after,
        )
