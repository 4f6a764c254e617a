"""Adaptation methods by ``adapt.method``: one line per method."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synthset.adapt.base import Adapter
from synthset.registry import Registry

if TYPE_CHECKING:
    from synthset.recipe import AdaptSpec

ADAPTERS: Registry[type[Adapter]] = Registry(
    "adapt.method",
    {
        "tiny_diffusion": "synthset.adapt.tiny_diffusion:TinyDiffusionAdapter",
        "lora": "synthset.adapt.lora:LoraAdapter",
        "textual_inversion": "synthset.adapt.textual_inversion:TextualInversionAdapter",
        "diffusion_inversion": "synthset.adapt.diffusion_inversion:DiffusionInversionAdapter",
        "class_encoder": "synthset.adapt.class_encoder:ClassEncoderAdapter",
    },
)


def build_adapter(spec: AdaptSpec) -> Adapter:
    """The adapter of ``spec.method`` (imported on first use)."""
    return ADAPTERS.load(spec.method)(spec)
