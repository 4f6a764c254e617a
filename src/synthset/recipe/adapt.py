"""The adapt section: how a diffusion model learns the real train split before generating."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from synthset.recipe.base import Strict

_TINY = ("tiny_diffusion",)
_DIFFUSERS = ("lora", "textual_inversion", "diffusion_inversion", "class_encoder")
_CAPTIONED = ("lora", "textual_inversion")  # the methods that train on the prompts stage's text
_TOKENS = ("textual_inversion", "diffusion_inversion", "class_encoder")
_TINY_HINT = "it sets up the embedded tiny model (method: tiny_diffusion); remove it"
_DIFFUSERS_HINT = (
    "it applies to methods that adapt a diffusers pipeline (lora, textual_inversion, "
    "diffusion_inversion, class_encoder)"
)
_CE_HINT = "it sets up the class encoder; use method: class_encoder or remove it"


class AdaptSpec(Strict):
    """Adaptation on the real train split: train the embedded class-conditional model from
    scratch (``tiny_diffusion``, the default) or adapt a pretrained diffusers text-to-image
    pipeline (``lora``, ``textual_inversion``).

    Fields left unset take the method's default (:data:`METHOD_DEFAULTS`, e.g. lr 2e-3 for the
    tiny model, 1e-4 for LoRA, 5e-3 for textual inversion). A field only some methods read is
    refused for the others (:data:`METHOD_FIELDS`). Defaults of the tiny model are tuned for
    small images on a CPU (the 8×8 digits demo trains in ~1.5 min).
    """

    METHOD_FIELDS: ClassVar[dict[str, tuple[tuple[str, ...], str]]] = {
        "image_size": (_TINY, _TINY_HINT),
        "channels": (_TINY, _TINY_HINT),
        "layers_per_block": (_TINY, _TINY_HINT),
        "attention": (_TINY, _TINY_HINT),
        "cond_dropout": (
            ("tiny_diffusion", "class_encoder"),
            "label dropout for guidance; use method tiny_diffusion or class_encoder",
        ),
        "num_train_timesteps": (_TINY, _TINY_HINT),
        "base": (_DIFFUSERS, _DIFFUSERS_HINT),
        "resolution": (_DIFFUSERS, _DIFFUSERS_HINT),
        "rank": (("lora", "class_encoder"), "LoRA's rank; use method lora or class_encoder"),
        "alpha": (("lora", "class_encoder"), "LoRA's scale; use method lora or class_encoder"),
        "lora_text_encoder": (("lora",), "LoRA on the text encoder; use method: lora"),
        "num_tokens": (
            _TOKENS,
            "learned tokens; use textual_inversion, diffusion_inversion or class_encoder",
        ),
        "init_word": (("textual_inversion",), "the tokens' start; use method: textual_inversion"),
        "group_size": (
            ("diffusion_inversion",),
            "images per inversion job; use method: diffusion_inversion",
        ),
        "encoder_width": (("class_encoder",), _CE_HINT),
        "finetune": (("class_encoder",), _CE_HINT),
        "finetune_steps": (("class_encoder",), _CE_HINT),
        "finetune_lr": (("class_encoder",), _CE_HINT),
    }
    METHOD_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny_diffusion": {"lr": 2e-3, "batch_size": 128, "ema_decay": 0.995, "validate_every": 0},
        "lora": {"lr": 1e-4, "batch_size": 8, "ema_decay": 0.0},
        "textual_inversion": {"lr": 5e-3, "batch_size": 8, "ema_decay": 0.0},
        # the paper's settings (Zhou et al. 2023: lr 3e-2 on CIFAR-10 with SD 1.5)
        "diffusion_inversion": {"lr": 3e-2, "batch_size": 8, "ema_decay": 0.0},
        "class_encoder": {"lr": 1e-3, "batch_size": 8, "ema_decay": 0.0},
    }

    method: Literal[
        "tiny_diffusion", "lora", "textual_inversion", "diffusion_inversion", "class_encoder"
    ] = Field(
        "tiny_diffusion",
        description="tiny_diffusion: train the embedded class-conditional model from scratch; "
        "lora: LoRA on a pipeline's UNet attention, captions from the prompts stage; "
        "textual_inversion: new tokens per class in a pipeline's text encoder; "
        "diffusion_inversion: one learned conditioning per real image (frozen pipeline); "
        "class_encoder: a network from class id to conditioning replaces the text encoder, "
        "optionally followed by fine-tuning the UNet.",
    )
    # --- the training loop (every method)
    steps: int = Field(1000, ge=1, description="Optimisation steps.")
    batch_size: int | None = Field(None, ge=1, description="Images per step (method default).")
    lr: float | None = Field(None, gt=0, description="AdamW learning rate (method default).")
    warmup_steps: int = Field(100, ge=0, description="Linear learning-rate warm-up steps.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimisation step.")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "no", description="Autocast the forward pass (fp16 on CUDA only)."
    )
    ema_decay: float | None = Field(
        None, ge=0, lt=1, description="EMA decay of the saved weights (0: no EMA)."
    )
    checkpoint_every: int = Field(250, ge=1, description="Save a resumable state every N steps.")
    keep_checkpoints: bool = Field(
        False, description="Also keep the artifact at every checkpoint (<adapt>.checkpoints/)."
    )
    checkpoint: int | None = Field(
        None,
        ge=1,
        description="Generate with the artifact kept at this step (keep_checkpoints) instead of "
        "the final one; changing it never retrains, so a tune space can search it on the real "
        "val split (as Lomurno et al. pick their checkpoint, but never on test).",
    )
    validate_every: int | None = Field(
        None,
        ge=0,
        description="Loss on the real val split every N steps (0: never; default: "
        "at every checkpoint, never for tiny_diffusion).",
    )
    real_subset: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Adapt on this stratified fraction of the real train split only (the same "
        "images evaluate's real_subsets pick), e.g. 0.1 for an honest 'real 10% + synthetic'.",
    )
    device: str = "auto"
    # --- tiny_diffusion
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
    cond_dropout: float = Field(0.1, ge=0, lt=1, description="Label dropout for CFG.")
    num_train_timesteps: int = Field(1000, ge=10)
    # --- diffusers pipelines
    base: str | None = Field(
        None,
        description="The diffusers text-to-image pipeline to adapt (hub id or folder; SD 1.x/2.x "
        "or SDXL); default: generate.generator.model.",
    )
    resolution: int | None = Field(
        None, ge=8, description="Training resolution (default: the pipeline's native size)."
    )
    rank: int = Field(4, ge=1, le=256, description="lora: rank of the update matrices.")
    alpha: float | None = Field(None, gt=0, description="lora: scale numerator (default: rank).")
    lora_text_encoder: bool = Field(
        False,
        description="lora: also LoRA on the text encoder(s)' attention (q/k/v/out), like "
        "diffusers' --train_text_encoder: lets class words the base never learned (rare "
        "names, new classes) become distinct conditionings. Saved in the same LoRA file.",
    )
    num_tokens: int = Field(
        1,
        ge=1,
        le=77,
        description="Learned tokens: per class (textual_inversion, class_encoder) or per image "
        "(diffusion_inversion; the paper uses 5).",
    )
    init_word: str | None = Field(
        None,
        description="textual_inversion: the word the new tokens start from (default: the class "
        "name's last token).",
    )

    group_size: int = Field(
        100,
        ge=1,
        description="diffusion_inversion: images per inversion job; jobs are independent "
        "(synthset adapt --shard i/n) and each resumes on its own.",
    )
    encoder_width: int = Field(
        256, ge=8, description="class_encoder: hidden width of the class encoder's network."
    )
    finetune: Literal["none", "full", "lora"] = Field(
        "none",
        description="class_encoder stage 2: fine-tune the UNet with the encoder fixed (full or "
        "LoRA with 'rank'); none keeps the UNet frozen.",
    )
    finetune_steps: int = Field(0, ge=0, description="class_encoder: stage-2 steps.")
    finetune_lr: float = Field(1e-4, gt=0, description="class_encoder: stage-2 learning rate.")

    @model_validator(mode="after")
    def _kept_checkpoint(self) -> AdaptSpec:
        n = self.checkpoint
        if n is None:
            return self
        if not self.keep_checkpoints:
            raise ValueError("checkpoint needs keep_checkpoints: true (the steps it keeps)")
        if n % self.checkpoint_every or n >= self.steps:
            raise ValueError(
                f"checkpoint {n} is not a kept step: use a multiple of checkpoint_every "
                f"({self.checkpoint_every}) below steps ({self.steps}); the last step is the "
                "artifact itself (remove checkpoint)"
            )
        return self

    @classmethod
    def ignored_by_method(cls, method: str, name: str) -> str | None:
        """Why ``method`` ignores the field ``name`` (None when it reads it)."""
        methods, hint = cls.METHOD_FIELDS.get(name, ((method,), ""))
        return None if method in methods else f"method {method} ignores it; {hint}"

    @field_validator(*METHOD_FIELDS, mode="after")
    @classmethod
    def _used_by_method(cls, v: Any, info: ValidationInfo) -> Any:
        # runs only on values given; a given default (a dumped recipe read back) passes
        name = info.field_name
        assert name is not None
        if "method" in info.data and v != cls.model_fields[name].default:
            why = cls.ignored_by_method(info.data["method"], name)
            if why:
                raise ValueError(why)
        return v

    def resolved(self) -> AdaptSpec:
        """This spec with every unset field given its method's default."""
        defaults = {"validate_every": self.checkpoint_every} | self.METHOD_DEFAULTS[self.method]
        update = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return self.model_copy(update=update)

    @property
    def uses_pipeline(self) -> bool:
        """Whether the method adapts a pretrained diffusers pipeline."""
        return self.method in _DIFFUSERS

    @property
    def uses_captions(self) -> bool:
        """Whether the method trains on text: the prompts stage's prompts as captions."""
        return self.method in _CAPTIONED
