"""``adapt.method: lora``: LoRA on the transformer blocks of a pretrained pipeline's UNet
(attention and feed-forward, peft), trained on the real train images with their classes'
captions from the prompts stage.

The artifact is diffusers' LoRA format (``pytorch_lora_weights.safetensors``, written by the
pipeline's own ``save_lora_weights``), so the generators' ``lora:`` loader — and every other
tool that reads diffusers LoRAs — loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from synthset.adapt.base import AdaptData
from synthset.adapt.pipeline_task import (
    PipelineAdapter,
    PipelineTask,
    captioned_latents,
    class_captions,
    write_meta,
)
from synthset.adapt.sd_parts import PipelineParts
from synthset.recipe import AdaptSpec, LoraSpec

WEIGHT_NAME = "pytorch_lora_weights.safetensors"
# the attention projections and the feed-forward layers of the UNet's transformer blocks: the
# modules whose LoRA layers diffusers' load_lora_weights restores exactly (measured: LoRA on
# the attention pooling of addition_embed_type "text", on time_emb_proj, proj_in/out or the
# ResNet convolutions comes back wrong or NaN), tested in test_adapt_pipelines
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]


def add_unet_lora(unet: Any, spec: AdaptSpec) -> list[torch.nn.Parameter]:
    """Add LoRA layers (``spec.rank``/``alpha``) on :data:`TARGET_MODULES` of a frozen UNet and
    put it in training mode; returns the new trainable parameters."""
    from peft import LoraConfig

    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha or spec.rank,
        init_lora_weights="gaussian",
        target_modules=TARGET_MODULES,
    )
    unet.add_adapter(config)
    unet.train()
    return [p for p in unet.parameters() if p.requires_grad]


def save_unet_lora(parts: PipelineParts, out_dir: Path) -> None:
    """Write the UNet's LoRA layers in diffusers' format (``WEIGHT_NAME``) with the pipeline's
    own ``save_lora_weights``."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(parts.unet))
    type(parts.pipe).save_lora_weights(
        str(out_dir), unet_lora_layers=layers, weight_name=WEIGHT_NAME, safe_serialization=True
    )


class LoraTask(PipelineTask):
    """Frozen text encoder(s) and UNet; LoRA layers on the UNet's transformer blocks."""

    def __init__(self, spec: AdaptSpec, parts: PipelineParts, data: AdaptData) -> None:
        captions = class_captions(data, "lora")
        train_set = captioned_latents(parts, data.train, captions, "adapt: real train")
        val_set = (
            captioned_latents(parts, data.val, captions, "adapt: real val") if data.val else None
        )
        super().__init__(spec, parts, train_set, val_set)
        self.classes = data.classes
        self._params = add_unet_lora(parts.unet, spec)

    def parameters(self) -> list[torch.nn.Parameter]:
        return self._params

    def condition(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            return self.parts.encode(self.parts.token_ids(prompts))

    def save(self, out_dir: Path) -> None:
        save_unet_lora(self.parts, out_dir)
        write_meta(out_dir, self.spec, self.classes, rank=self.spec.rank)


class LoraAdapter(PipelineAdapter):
    """Trains a LoRA of ``adapt.base``; the text-to-image generators load it as ``lora:``."""

    task_class = LoraTask

    def generator_inputs(self, out_dir: Path) -> dict[str, Any]:
        return {
            "model": self.spec.base,
            "lora": [LoraSpec(path=str(out_dir), weight_name=WEIGHT_NAME)],
        }
