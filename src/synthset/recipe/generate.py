"""The generate section: the generator (or ensemble), its add-ons and the plan's size."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from synthset.recipe.base import Strict
from synthset.recipe.scale import RaySpec


class LoraSpec(Strict):
    """LoRA weights loaded into a diffusers pipeline (``pipe.load_lora_weights``)."""

    path: str = Field(description="A .safetensors file, a folder or a hub id holding LoRA weights.")
    weight_name: str | None = Field(
        None, description="File inside a folder or hub repo, e.g. pytorch_lora_weights.safetensors."
    )
    scale: float = Field(1.0, description="Strength of this LoRA (0 = off, 1 = as trained).")


class TextualInversionSpec(Strict):
    """A textual-inversion embedding (``pipe.load_textual_inversion``): a new prompt token."""

    path: str = Field(description="A .safetensors/.bin embedding file, a folder or a hub id.")
    token: str | None = Field(
        None, description="The token prompts use, e.g. '<my-style>' (default: the file's own)."
    )
    weight_name: str | None = Field(None, description="File inside a folder or hub repo.")


_REAL = ("tiny", "img2img", "inpaint")
_REAL_HINT = "use kind img2img (or inpaint) to start from real images, or remove it"
_MASK_HINT = "use kind inpaint to regenerate part of real images, or remove it"
_INV_HINT = "it samples from inverted images; use kind inversion or remove it"


class GeneratorSpec(Strict):
    """One image generator and its sampling settings.

    ``KIND_FIELDS`` says which kinds use the fields only some kinds use (every other field is
    used by all kinds); a value given for a kind that ignores it is refused (see
    :meth:`ignored_by_kind`), also in ensemble members and tune spaces."""

    KIND_FIELDS: ClassVar[dict[str, tuple[tuple[str, ...], str]]] = {
        "strength": (_REAL, _REAL_HINT),
        "variants_per_image": (_REAL, _REAL_HINT),
        "mask": (("inpaint",), _MASK_HINT),
        "mask_dir": (("inpaint",), _MASK_HINT),
        "mask_box": (("inpaint",), _MASK_HINT),
        "invert_mask": (("inpaint",), _MASK_HINT),
        "inversion_dir": (("inversion",), _INV_HINT),
        "emb_noise": (("inversion",), _INV_HINT),
        "interpolation_strength": (("inversion",), _INV_HINT),
        "samples_per_embedding": (("inversion",), _INV_HINT),
    }

    kind: Literal["tiny", "text2image", "img2img", "inpaint", "inversion"] = Field(
        "tiny",
        description="tiny (adapted model), text2image, img2img (noise then denoise real images), "
        "inpaint (regenerate the background of real images) or inversion (sample from the "
        "conditionings diffusion inversion learned per real image). 'tiny' also does img2img "
        "when 'strength' is set.",
    )
    model: str | None = Field(
        None,
        description="Diffusers model: hub id or local folder. For 'tiny', defaults to the "
        "checkpoint the adapt stage wrote.",
    )
    steps: int = Field(30, ge=1, le=1000)
    guidance_scale: float = Field(2.0, ge=0)
    negative_prompt: str | None = None
    scheduler: str | None = Field(
        None, description="Scheduler class or alias, e.g. ddim, euler, dpm++, unipc, lcm."
    )
    height: int | None = Field(None, ge=8)
    width: int | None = Field(None, ge=8)
    save_size: int | tuple[int, int] | None = Field(
        None, description="Resize images to this size (int or [width, height]) before saving."
    )
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: str = "auto"
    variant: str | None = Field(None, description="Weights variant, e.g. fp16.")
    strength: float | list[float] | None = Field(
        None,
        description="img2img/inpaint noise level in (0, 1]: small keeps the real image, 1 ignores "
        "it. A list sweeps levels: variant v of a real image uses strength[v mod len]. Setting it "
        "on kind 'tiny' makes the tiny model noise-then-denoise real images too.",
    )
    variants_per_image: int | None = Field(
        None, ge=1, description="Images made per real image (default: one per strength)."
    )
    mask: Literal["folder", "box", "saliency"] = Field(
        "saliency",
        description="inpaint mask source: folder (mask_dir), box (mask_box) or saliency (pixels "
        "far in colour from the border's median colour are the object).",
    )
    mask_dir: Path | None = Field(
        None,
        description="Masks parallel to the real ImageFolder: same relative path, .png, white = "
        "object.",
    )
    mask_box: tuple[float, float, float, float] | None = Field(
        None, description="Object box [x0, y0, x1, y1] as fractions of the image size."
    )
    invert_mask: bool = Field(
        False, description="inpaint: keep the background and regenerate the object instead."
    )
    prompt_embeds: Path | None = Field(
        None,
        description="A .safetensors file of text embeddings used instead of encoding prompts: "
        "one tensor [tokens, dim] per class name (and '<class>.pooled' [dim] for SDXL/SD3); "
        "e.g. embeddings learned by diffusion inversion or a class encoder.",
    )
    inversion_dir: Path | None = Field(
        None,
        description="inversion: the folder adapt.method diffusion_inversion wrote "
        "(embeddings.safetensors + index.json); filled by the adapt stage.",
    )
    emb_noise: float = Field(
        0.0,
        ge=0,
        description="inversion: std of the Gaussian noise added to each learned conditioning "
        "(drawn from the item's seed): more diversity, less fidelity.",
    )
    interpolation_strength: float = Field(
        0.0,
        ge=0,
        le=1,
        description="inversion: λ of e_i + λ(e_j − e_i), moving each image's conditioning "
        "towards another image of the same class (j drawn from the item's seed).",
    )
    samples_per_embedding: int | None = Field(
        None,
        ge=1,
        description="inversion: at most this many images per learned conditioning (a class "
        "gets min(images_per_class, its images × this) items; items take the class's images "
        "round robin).",
    )
    lora: list[LoraSpec] = Field([], description="LoRA weights to load (fused at load time).")
    textual_inversion: list[TextualInversionSpec] = Field(
        [], description="Textual-inversion embeddings to load; their tokens can appear in prompts."
    )
    class_tokens: dict[str, str] = Field(
        {},
        description="Per class name, a token (e.g. a textual-inversion '<cat>') put in place of "
        "the class name in its prompts; filled by adapt.method textual_inversion.",
    )
    tiny_vae: str | None = Field(
        None,
        description="Decode (and encode) with a tiny autoencoder instead of the pipeline's VAE: "
        "a folder or hub id of an AutoencoderKL-compatible AutoencoderTiny, e.g. "
        "madebyollin/taesd (SD 1.x/2.x), madebyollin/taesdxl, madebyollin/taesd3. Drafts: much "
        "faster decoding, slightly softer images.",
    )
    channels_last: bool = Field(
        False, description="Run the UNet/transformer and VAE in channels-last memory format."
    )
    compile: bool = Field(
        False,
        description="torch.compile the UNet/transformer (slow first batch, faster after; GPU).",
    )
    attention_slicing: bool = Field(
        False, description="Compute attention in slices: less memory, a little slower."
    )
    vae_tiling: bool = Field(False, description="Decode large images tile by tile (less memory).")
    cpu_offload: Literal["none", "model", "sequential"] = Field(
        "none",
        description="Keep weights in CPU memory and move each model (or each layer: "
        "'sequential') to the GPU only while it runs: for GPUs with little memory.",
    )

    @property
    def strengths(self) -> list[float]:
        """The strength list (one value when a single number is given)."""
        if self.strength is None:
            return []
        return list(self.strength) if isinstance(self.strength, list) else [self.strength]

    @property
    def uses_real_images(self) -> bool:
        """Whether this generator makes one item per (real image, variant)."""
        return self.kind in ("img2img", "inpaint") or (
            self.kind == "tiny" and self.strength is not None
        )

    @property
    def uses_inversion(self) -> bool:
        """Whether this generator samples the conditionings diffusion inversion learned per real
        image (its items come from the inversion artifact's index)."""
        return self.kind == "inversion"

    @property
    def masks_from_folder(self) -> bool:
        """Whether each item's inpainting mask is read from the recipe's mask folder."""
        return self.kind == "inpaint" and self.mask == "folder"

    @classmethod
    def ignored_by_kind(cls, kind: str, name: str, strength: Any = None) -> str | None:
        """Why ``kind`` ignores field ``name`` and what to do (None when it uses it). 'tiny'
        makes variants of real images only with a strength."""
        kinds, hint = cls.KIND_FIELDS.get(name, ((kind,), ""))
        if kind not in kinds:
            return f"{kind} ignores it; {hint}"
        if kind == "tiny" and name == "variants_per_image" and strength is None:
            return (
                "tiny makes variants of real images only with a strength; set strength or remove it"
            )
        return None

    @field_validator(*KIND_FIELDS, mode="after")
    @classmethod
    def _used_by_kind(cls, v: Any, info: ValidationInfo) -> Any:
        # runs only on values given (defaults are not validated); a given default (e.g. a
        # dumped recipe read back) changes nothing, so it passes
        name = info.field_name
        assert name is not None
        if "kind" in info.data and v != cls.model_fields[name].default:
            why = cls.ignored_by_kind(info.data["kind"], name, info.data.get("strength"))
            if why:
                raise ValueError(why)
        return v

    @field_validator("strength")
    @classmethod
    def _strength_range(cls, v: float | list[float] | None) -> float | list[float] | None:
        values = v if isinstance(v, list) else [] if v is None else [v]
        if isinstance(v, list) and not v:
            raise ValueError("give at least one strength")
        if any(not 0 < s <= 1 for s in values):
            raise ValueError("strength must be in (0, 1], e.g. 0.5")
        return v

    @field_validator("mask_box")
    @classmethod
    def _box_fractions(
        cls, v: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if v is not None:
            x0, y0, x1, y1 = v
            if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
                raise ValueError("mask_box is [x0, y0, x1, y1] fractions with 0 <= x0 < x1 <= 1")
        return v

    @model_validator(mode="after")
    def _mode_needs(self) -> GeneratorSpec:
        too_small = [s for s in self.strengths if int(self.steps * s) < 1]
        if too_small and self.kind in ("img2img", "inpaint"):
            raise ValueError(
                f"strength {too_small[0]} x steps {self.steps} leaves no denoising step; "
                f"raise steps to at least {math.ceil(1 / too_small[0])}"
            )
        if self.kind == "inpaint" and self.mask == "folder" and self.mask_dir is None:
            raise ValueError("mask 'folder' needs mask_dir (masks parallel to the real images)")
        if self.kind == "inpaint" and self.mask == "box" and self.mask_box is None:
            raise ValueError("mask 'box' needs mask_box: [x0, y0, x1, y1] fractions")
        if self.kind == "tiny" and (used := self.diffusers_options()):
            raise ValueError(
                f"{used[0]} needs a diffusers pipeline (kind text2image, img2img or inpaint); "
                "the tiny model does not take it"
            )
        return self

    def diffusers_options(self) -> list[str]:
        """The options set here that only diffusers pipelines take (not the tiny model)."""
        names = ["prompt_embeds", "inversion_dir", "lora", "textual_inversion", "class_tokens"]
        names += ["tiny_vae"]
        names += ["channels_last"]
        names += ["compile", "attention_slicing", "vae_tiling"]
        used = [n for n in names if getattr(self, n)]
        return used + (["cpu_offload"] if self.cpu_offload != "none" else [])

    @field_validator("save_size")
    @classmethod
    def _positive_size(cls, v: int | tuple[int, int] | None) -> int | tuple[int, int] | None:
        sizes = (v,) if isinstance(v, int) else (v or ())
        if any(s < 1 for s in sizes):
            raise ValueError("sizes must be positive")
        return v


class EnsembleMember(GeneratorSpec):
    """One generator of an ensemble: a name (recorded per image) and a sampling weight."""

    name: str = Field(description="Recorded in the manifest as the image's generator.")
    weight: float = Field(1.0, description="Relative share of the plan's items (> 0).")

    @field_validator("weight")
    @classmethod
    def _positive_weight(cls, v: float) -> float:
        if not v > 0:
            raise ValueError("weight must be > 0, e.g. 1")
        return v


class GenerateSpec(Strict):
    """The plan's size and the generator(s) that fill it."""

    @property
    def planned_per_class(self) -> int:
        """Items planned per class: ``images_per_class × overgenerate``, rounded up."""
        return math.ceil(self.images_per_class * self.overgenerate - 1e-9)

    images_per_class: int = Field(
        100,
        ge=1,
        description="Items per class. For real-image modes (img2img, inpaint): at most this many "
        "(real image, variant) items per class.",
    )
    overgenerate: float = Field(
        1.0,
        ge=1.0,
        le=10.0,
        description="Plan images_per_class × this (rounded up) per class, so curation can keep "
        "the best images_per_class (curate.target_per_class defaults to it when this is > 1).",
    )
    batch_size: int = Field(64, ge=1)
    generator: GeneratorSpec = GeneratorSpec()
    generators: list[EnsembleMember] | None = Field(
        None,
        min_length=1,
        description="An ensemble instead of 'generator': each item goes to one member, drawn "
        "from (seed, item id) with probability proportional to its weight.",
    )
    image_format: Literal["png", "jpeg", "webp"] = "png"
    jpeg_quality: int = Field(95, ge=1, le=100)
    writer_threads: int = Field(2, ge=1, le=64, description="Threads encoding and writing images.")
    executor: Literal["local", "queue", "ray"] = Field(
        "local",
        description="Who runs the plan's items: local (this process, its shard's batches in "
        "order), queue (any number of processes on this node share the batches through a "
        "lease queue in the run folder; a killed one's batch goes to the others) or ray "
        "(Ray Data maps the batches over generator actors on a Ray cluster). Executors "
        "change speed, never images, so this is not part of any fingerprint.",
    )
    ray: RaySpec = Field(default_factory=RaySpec, description="executor ray: its cluster.")
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="Processes this 'synthset generate' runs (itself and N-1 more, one GPU each "
        "when there are N): with more than one, local runs as the queue executor; other "
        "'synthset generate' processes with the queue may join.",
    )
    lease_seconds: float = Field(
        120.0,
        gt=0,
        description="queue: a batch whose worker stopped renewing for this long goes to another.",
    )
    queue_dir: Path | None = Field(
        None,
        description="queue: the folder of its SQLite database (default: the run folder's "
        "queue/). It coordinates one node's processes only, so on a cluster whose run folder "
        "is on NFS/Lustre point it at node-local disk, e.g. /tmp/synthset-queue.",
    )
    max_attempts: int = Field(
        3, ge=1, description="queue: a batch that fails this many times is set aside as failed."
    )

    @model_validator(mode="after")
    def _one_generator_form(self) -> GenerateSpec:
        if self.generators is not None:
            if "generator" in self.model_fields_set:
                raise ValueError("give either 'generator' or 'generators' (an ensemble), not both")
            names = [g.name for g in self.generators]
            if len(set(names)) != len(names):
                raise ValueError(f"generators: names must be unique, got {names}")
            real = {g.uses_real_images for g in self.generators}
            if len(real) > 1:
                raise ValueError(
                    "generators: mix real-image modes (img2img, inpaint) only with each other"
                )
        return self

    def member_of(self, name: object) -> GeneratorSpec:
        """The ensemble member called ``name`` (the single generator without an ensemble)."""
        for member in self.generators or []:
            if member.name == name:
                return member
        return self.generator

    @property
    def members(self) -> list[GeneratorSpec]:
        """The generators of this recipe: the ensemble's members, or the single generator."""
        return list(self.generators) if self.generators is not None else [self.generator]
