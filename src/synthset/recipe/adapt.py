"""The adapt section: training the embedded diffusion model on the real train split."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from synthset.recipe.base import Strict


class AdaptSpec(Strict):
    """Training of the embedded class-conditional diffusion model on the real train split.

    Defaults are tuned for small images on a CPU (the 8×8 digits demo trains in ~1.5 min).
    """

    method: Literal["tiny_diffusion"] = "tiny_diffusion"
    image_size: int = Field(8, ge=8, le=256, description="Training resolution (pixels).")
    channels: list[Annotated[int, Field(ge=4)]] = Field(
        [32, 64],
        min_length=1,
        max_length=5,
        description="UNet channels per resolution level (each level halves the size).",
    )
    layers_per_block: int = Field(1, ge=1, le=4, description="ResNet layers per UNet level.")
    attention: bool = Field(
        False, description="Self-attention at the lowest resolution level (slower on CPU)."
    )
    steps: int = Field(1000, ge=1, description="Optimisation steps.")
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-3, gt=0, description="AdamW learning rate (constant after warm-up).")
    warmup_steps: int = Field(100, ge=0, description="Linear learning-rate warm-up steps.")
    cond_dropout: float = Field(0.1, ge=0, lt=1, description="Label dropout for CFG.")
    ema_decay: float = Field(0.995, ge=0, lt=1, description="EMA decay of the saved weights.")
    num_train_timesteps: int = Field(1000, ge=10)
    checkpoint_every: int = Field(250, ge=1, description="Save a resumable state every N steps.")
    device: str = "auto"
