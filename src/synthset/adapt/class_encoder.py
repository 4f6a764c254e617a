"""``adapt.method: class_encoder`` (Lomurno et al., ESANN 2024): a small network maps a class id
to a context of ``num_tokens`` × the UNet's cross-attention width that replaces the text
encoder's output; generation conditions on the class only.

- Stage 1 trains the encoder with the whole pipeline frozen. The network is a one-hot class id
  (plus a *null* class, used with probability ``cond_dropout`` so classifier-free guidance has an
  unconditional input) → linear → SiLU → linear; its output bias starts as the empty prompt's
  first ``num_tokens`` states, so training starts from the unconditional input.
- Stage 2 (``finetune: full | lora``, ``finetune_steps`` > 0) fine-tunes the UNet with the
  encoder fixed, at ``finetune_lr`` (LoRA: ``rank``/``alpha`` on the attention, via peft).

Both stages run in the shared loop (resumable, validation loss on the real val split). The
artifact holds ``prompt_embeds.safetensors`` — each class's context (and ``.pooled`` vector on
SDXL) plus the null class's as ``__unconditional__`` — which the generators feed as
``prompt_embeds`` / ``negative_prompt_embeds``; ``class_encoder.safetensors`` (the network);
and after stage 2 the LoRA file or the fine-tuned pipeline (``pipeline/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from synthset.adapt.base import AdaptData
from synthset.adapt.diffusion_inversion import empty_context
from synthset.adapt.lora import WEIGHT_NAME, add_unet_lora, save_unet_lora
from synthset.adapt.pipeline_task import (
    CaptionedLatents,
    PipelineAdapter,
    fit_pipeline_task,
    meta_value,
    task_fingerprint,
    write_meta,
)
from synthset.adapt.sd_parts import PipelineParts
from synthset.recipe import AdaptSpec, LoraSpec
from synthset.store.conditioning import POOLED, UNCONDITIONAL

EMBEDS_FILE = "prompt_embeds.safetensors"
ENCODER_FILE = "class_encoder.safetensors"
PIPELINE_DIR = "pipeline"
VAL_BATCH = 64


class ClassEncoder(torch.nn.Module):
    """One-hot class id (the last id is the null class) → ``tokens`` × ``width`` context, and a
    pooled vector when ``pooled_dim`` > 0 (SDXL)."""

    def __init__(
        self,
        n_classes: int,
        hidden: int,
        start: torch.Tensor,
        start_pooled: torch.Tensor | None,
    ) -> None:
        super().__init__()
        self.tokens, self.width = start.shape
        self.null_id = n_classes
        self.hidden = torch.nn.Linear(n_classes + 1, hidden, bias=False)
        self.context = torch.nn.Linear(hidden, self.tokens * self.width)
        with torch.no_grad():  # start at the unconditional input, small class-dependent steps
            self.context.weight.mul_(0.1)
            self.context.bias.copy_(start.flatten())
        self.pooled = None
        if start_pooled is not None:
            self.pooled = torch.nn.Linear(hidden, start_pooled.numel())
            with torch.no_grad():
                self.pooled.weight.mul_(0.1)
                self.pooled.bias.copy_(start_pooled)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        onehot = torch.nn.functional.one_hot(ids, self.null_id + 1).to(self.hidden.weight.dtype)
        h = torch.nn.functional.silu(self.hidden(onehot))
        context = self.context(h).view(len(ids), self.tokens, self.width)
        return context, (self.pooled(h) if self.pooled is not None else None)


@dataclass(frozen=True)
class Stage:
    """Which stage a task trains: 1 (the encoder) or 2 (the UNet, ``full`` or ``lora``)."""

    number: int
    fingerprint: str  # of the training; saved in the artifact's metadata
    finetune: str = "none"
    encoder_dir: Path | None = None  # stage 2: where stage 1 saved the encoder


class ClassEncoderTask:
    """The denoising loss of real latents given their class's context (a
    :class:`~synthset.adapt.training.TrainingTask`); ``stage`` says what it trains."""

    def __init__(
        self, spec: AdaptSpec, parts: PipelineParts, data: AdaptData, stage: Stage
    ) -> None:
        from safetensors.torch import load_file

        self.spec, self.parts, self.stage, self.classes = spec, parts, stage, data.classes
        self.device = parts.device
        self.train_set = _latents(parts, data.train, "adapt: real train")
        self.val_set = _latents(parts, data.val, "adapt: real val") if data.val else None
        start, start_pooled = empty_context(parts, spec.num_tokens)
        self.encoder = ClassEncoder(
            len(data.classes), spec.encoder_width, start.cpu(), _cpu(start_pooled)
        ).to(parts.device)
        self._ids = {c.id: k for k, c in enumerate(data.classes)}  # class id → encoder row
        if stage.number == 1:
            self._params = list(self.encoder.parameters())
            return
        assert stage.encoder_dir is not None
        self.encoder.load_state_dict(load_file(str(stage.encoder_dir / ENCODER_FILE)))
        self.encoder.requires_grad_(False)
        if stage.finetune == "lora":
            self._params = add_unet_lora(parts.unet, spec)
        else:
            parts.unet.requires_grad_(True).train()
            self._params = list(parts.unet.parameters())

    def parameters(self) -> list[torch.nn.Parameter]:
        return self._params

    def _rows(self, labels: list[int]) -> torch.Tensor:
        return torch.tensor([self._ids[lbl] for lbl in labels], device=self.device)

    def loss(self, gen: torch.Generator) -> torch.Tensor:
        assert self.spec.batch_size is not None
        data = self.train_set
        idx = torch.randint(0, len(data.labels), (self.spec.batch_size,), generator=gen)
        rows = self._rows([data.labels[i] for i in idx.tolist()])
        drop = torch.rand(len(idx), generator=gen) < self.spec.cond_dropout
        rows = torch.where(drop.to(self.device), self.encoder.null_id, rows)
        context, pooled = self.encoder(rows)
        return self.parts.loss(data.latents[idx], context, pooled, gen)

    @torch.no_grad()
    def validation_loss(self) -> float | None:
        val = self.val_set
        if val is None or not val.labels:
            return None
        gen = torch.Generator().manual_seed(0)
        total = 0.0
        for i in range(0, len(val.labels), VAL_BATCH):
            labels = val.labels[i : i + VAL_BATCH]
            context, pooled = self.encoder(self._rows(labels))
            loss = self.parts.loss(val.latents[i : i + VAL_BATCH], context, pooled, gen)
            total += float(loss) * len(labels)
        return total / len(val.labels)

    @torch.no_grad()
    def save(self, out_dir: Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()}
        save_file(state, str(out_dir / ENCODER_FILE))
        ids = torch.arange(len(self.classes) + 1, device=self.device)
        context, pooled = self.encoder(ids)
        names = [c.name for c in self.classes] + [UNCONDITIONAL]
        tensors = {name: context[k].cpu().contiguous() for k, name in enumerate(names)}
        if pooled is not None:
            tensors |= {name + POOLED: pooled[k].cpu().contiguous() for k, name in enumerate(names)}
        save_file(tensors, str(out_dir / EMBEDS_FILE))
        if self.stage.finetune == "lora":
            save_unet_lora(self.parts, out_dir, self.spec)
        elif self.stage.finetune == "full":
            self.parts.pipe.save_pretrained(out_dir / PIPELINE_DIR, safe_serialization=True)
        write_meta(
            out_dir,
            self.spec,
            self.classes,
            num_tokens=self.spec.num_tokens,
            stage=self.stage.number,
            finetune=self.stage.finetune,
            fingerprint=self.stage.fingerprint,
        )


class ClassEncoderAdapter(PipelineAdapter):
    """Trains a class encoder for ``adapt.base`` (then, if asked, fine-tunes its UNet); the
    text-to-image generators condition on its per-class contexts."""

    def fit(
        self,
        data: AdaptData,
        out_dir: Path,
        seed: int,
        progress: bool = True,
        stop_after: int | None = None,
    ) -> bool:
        spec = self.spec
        fingerprint = task_fingerprint(spec, data, seed)
        two_stages = spec.finetune != "none" and spec.finetune_steps > 0
        stage1_dir = _stage1_dir(out_dir) if two_stages else Path(out_dir)
        if not two_stages or meta_value(stage1_dir, "fingerprint") != fingerprint:
            stage1 = Stage(1, fingerprint)
            done = fit_pipeline_task(
                spec,
                data,
                stage1_dir,
                seed,
                progress,
                lambda parts: ClassEncoderTask(spec, parts, data, stage1),
                stop_after,
            )
            if not done or not two_stages:
                return done
        stage2 = spec.model_copy(update={"steps": spec.finetune_steps, "lr": spec.finetune_lr})
        stage = Stage(2, fingerprint, spec.finetune, stage1_dir)
        return fit_pipeline_task(
            stage2,
            data,
            out_dir,
            seed + 1,
            progress,
            lambda parts: ClassEncoderTask(stage2, parts, data, stage),
            stop_after,
        )

    def generator_inputs(self, out_dir: Path) -> dict[str, Any]:
        out_dir = Path(out_dir)
        inputs: dict[str, Any] = {"model": self.spec.base, "prompt_embeds": out_dir / EMBEDS_FILE}
        if self.spec.finetune == "full" and self.spec.finetune_steps > 0:
            inputs["model"] = str(out_dir / PIPELINE_DIR)
        elif self.spec.finetune == "lora" and self.spec.finetune_steps > 0:
            inputs["lora"] = [LoraSpec(path=str(out_dir), weight_name=WEIGHT_NAME)]
        return inputs


def _stage1_dir(out_dir: Path) -> Path:
    return Path(out_dir).parent / f"{Path(out_dir).name}.stage1"


def _latents(parts: PipelineParts, samples: Any, what: str) -> CaptionedLatents:
    return CaptionedLatents(
        parts.latents(parts.pixels(samples, what)), [lbl for _, lbl in samples], {}
    )


def _cpu(t: torch.Tensor | None) -> torch.Tensor | None:
    return t.cpu() if t is not None else None
