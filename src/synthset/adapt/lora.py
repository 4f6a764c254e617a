"""``adapt.method: lora``: LoRA on the transformer blocks of a pretrained pipeline's UNet
(attention and feed-forward, peft), and optionally on its text encoders' attention
(``lora_text_encoder``), trained on the real train images with their classes' captions from the
prompts stage.

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
# the CLIP text encoders' attention projections (diffusers' --train_text_encoder targets)
TEXT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "out_proj"]


def _lora_config(spec: AdaptSpec, targets: list[str]) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha or spec.rank,
        init_lora_weights="gaussian",
        target_modules=targets,
    )


def add_unet_lora(unet: Any, spec: AdaptSpec) -> list[torch.nn.Parameter]:
    """Add LoRA layers (``spec.rank``/``alpha``) on :data:`TARGET_MODULES` of a frozen UNet and
    put it in training mode; returns the new trainable parameters."""
    unet.add_adapter(_lora_config(spec, TARGET_MODULES))
    unet.train()
    return [p for p in unet.parameters() if p.requires_grad]


def add_text_encoder_lora(encoder: Any, spec: AdaptSpec) -> list[torch.nn.Parameter]:
    """LoRA layers on :data:`TEXT_TARGET_MODULES` of a frozen text encoder (peft's own
    injection: transformers' ``add_adapter`` may demand a newer peft than the one installed);
    returns the new trainable parameters. The encoder stays in eval mode (no dropout)."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(_lora_config(spec, TEXT_TARGET_MODULES), encoder)
    encoder.eval()
    return [p for n, p in encoder.named_parameters() if "lora_" in n]


def _metadata(spec: AdaptSpec, targets: list[str]) -> dict[str, Any]:
    """The LoRA config as diffusers stores it beside the weights."""
    config = _lora_config(spec, targets).to_dict()
    return {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}


def _text_encoder_layers(encoder: Any) -> dict[str, torch.Tensor]:
    """An injected encoder's LoRA tensors under peft's adapter-free names."""
    return {k.replace(".default.", "."): v for k, v in encoder.state_dict().items() if "lora_" in k}


def save_unet_lora(
    parts: PipelineParts, out_dir: Path, spec: AdaptSpec, text_encoders: bool = False
) -> None:
    """Write the UNet's LoRA layers (and with ``text_encoders`` the text encoders') in
    diffusers' format (``WEIGHT_NAME``) with the pipeline's own ``save_lora_weights``."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    # the configs (alpha, rank, targets) travel with the weights: without them diffusers'
    # loader takes alpha = rank, a wrong scale whenever adapt.alpha is set
    extra: dict[str, Any] = {"unet_lora_adapter_metadata": _metadata(spec, TARGET_MODULES)}
    if text_encoders:
        names = ["text_encoder", "text_encoder_2"]
        for name, encoder in zip(names, parts.text_encoders, strict=False):
            layers = convert_state_dict_to_diffusers(_text_encoder_layers(encoder))
            extra[f"{name}_lora_layers"] = layers
            extra[f"{name}_lora_adapter_metadata"] = _metadata(spec, TEXT_TARGET_MODULES)
    unet_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(parts.unet))
    type(parts.pipe).save_lora_weights(
        str(out_dir),
        unet_lora_layers=unet_layers,
        weight_name=WEIGHT_NAME,
        safe_serialization=True,
        **extra,
    )


class LoraTask(PipelineTask):
    """Frozen text encoder(s) and UNet; LoRA layers on the UNet's transformer blocks (and with
    ``lora_text_encoder`` on the text encoders' attention)."""

    def __init__(self, spec: AdaptSpec, parts: PipelineParts, data: AdaptData) -> None:
        captions = class_captions(data, "lora")
        train_set = captioned_latents(parts, data.train, captions, "adapt: real train")
        val_set = (
            captioned_latents(parts, data.val, captions, "adapt: real val") if data.val else None
        )
        super().__init__(spec, parts, train_set, val_set)
        self.classes = data.classes
        self._params = add_unet_lora(parts.unet, spec)
        if spec.lora_text_encoder:
            for encoder in parts.text_encoders:
                self._params += add_text_encoder_lora(encoder, spec)

    def parameters(self) -> list[torch.nn.Parameter]:
        return self._params

    def condition(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.set_grad_enabled(self.spec.lora_text_encoder and torch.is_grad_enabled()):
            return self.parts.encode(self.parts.token_ids(prompts))

    def save(self, out_dir: Path) -> None:
        save_unet_lora(self.parts, out_dir, self.spec, text_encoders=self.spec.lora_text_encoder)
        write_meta(out_dir, self.spec, self.classes, rank=self.spec.rank)


class LoraAdapter(PipelineAdapter):
    """Trains a LoRA of ``adapt.base``; the text-to-image generators load it as ``lora:``."""

    task_class = LoraTask

    def generator_inputs(self, out_dir: Path) -> dict[str, Any]:
        return {
            "model": self.spec.base,
            "lora": [LoraSpec(path=str(out_dir), weight_name=WEIGHT_NAME)],
        }
