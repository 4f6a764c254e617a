"""The recipe: pydantic v2 models of every stage's settings, loaded from YAML.

Unknown keys are errors. Every validation problem becomes a one-line ``SynthsetError`` naming the
field path and what is allowed, e.g. ``recipe error at generate.steps: ...``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from synthset.errors import SynthsetError


class Strict(BaseModel):
    """Base model: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ClassesSpec(Strict):
    """Where class names come from: one of ``names``, ``file``, ``imagefolder``, ``dataset``."""

    names: list[str] | None = Field(None, description="Class names, in label order.")
    file: Path | None = Field(None, description="Text file with one class name per line.")
    imagefolder: Path | None = Field(None, description="Folder whose sub-folders are the classes.")
    dataset: str | None = Field(
        None, description="A known dataset's class list: digits, cifar10, cifar100, imagenet, …"
    )
    synonyms: dict[str, list[str]] = Field(
        {}, description="Other names per class (label check and prompts), e.g. {car: [automobile]}."
    )
    descriptions: dict[str, str] = Field(
        {}, description="A short description or hypernym per class, e.g. {tabby: a kind of cat}."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ClassesSpec:
        given = [k for k in ("names", "file", "imagefolder", "dataset") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of names, file, imagefolder, dataset"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class RealDataSpec(Strict):
    """Real images: the adaptation data and the CAS train / validation / test splits."""

    source: Literal["digits", "imagefolder", "hf", "torchvision"] = Field(
        "digits",
        description="digits (bundled), imagefolder, hf (Hugging Face datasets) or torchvision.",
    )
    path: Path | None = Field(
        None,
        description="imagefolder root: either train/ val/ test/ sub-folders, or class folders "
        "that synthset splits itself. hf: a folder saved with save_to_disk, a local data folder "
        "(parquet, imagefolder, ...) or a hub id (needs network).",
    )
    name: str | None = Field(
        None, description="torchvision: the dataset class, e.g. CIFAR10, MNIST, FashionMNIST, SVHN."
    )
    root: Path | None = Field(
        None,
        description="torchvision: the folder holding the dataset's files in torchvision's layout "
        "(never downloaded here).",
    )
    image_column: str = Field("image", description="hf: the column holding the images.")
    label_column: str = Field("label", description="hf: the column holding the labels.")
    splits: dict[Literal["train", "val", "test"], str] | None = Field(
        None,
        description="hf / torchvision: the source's split name for each of train / val / test, "
        "e.g. {train: train, test: test}; a split left out is carved from train. "
        "Default: train, validation (hf, if present), test.",
    )
    labels: Literal["auto", "name", "index"] = Field(
        "auto",
        description="hf / torchvision: match source labels to the recipe's classes by class name, "
        "or by index (label k = the k-th class). auto: by name when the source has names.",
    )
    max_per_class: int | None = Field(
        None, ge=1, description="hf / torchvision: at most this many images per class and split."
    )
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(
        0.25,
        ge=0,
        lt=0.5,
        description="Share held out for testing when the source has no test split (0: the "
        "source must have one).",
    )

    @model_validator(mode="after")
    def _path_needed(self) -> RealDataSpec:
        if self.source in ("imagefolder", "hf") and self.path is None:
            what = "a folder of class folders" if self.source == "imagefolder" else "a dataset"
            raise ValueError(f"source '{self.source}' needs 'path' ({what})")
        if self.source == "torchvision" and (self.name is None or self.root is None):
            raise ValueError(
                "source 'torchvision' needs 'name' (e.g. CIFAR10) and 'root' (its files' folder)"
            )
        if self.splits is not None and "train" not in self.splits:
            raise ValueError("splits must name the source's train split, e.g. {train: train}")
        return self


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


class GeneratorSpec(Strict):
    """One image generator and its sampling settings."""

    kind: Literal["tiny", "text2image", "img2img", "inpaint"] = Field(
        "tiny",
        description="tiny (adapted model), text2image, img2img (noise then denoise real images) "
        "or inpaint (regenerate the background of real images). 'tiny' also does img2img when "
        "'strength' is set.",
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
    lora: list[LoraSpec] = Field([], description="LoRA weights to load (fused at load time).")
    textual_inversion: list[TextualInversionSpec] = Field(
        [], description="Textual-inversion embeddings to load; their tokens can appear in prompts."
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
        names = ["prompt_embeds", "lora", "textual_inversion", "tiny_vae", "channels_last"]
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


class LLMSpec(Strict):
    """A language model for the LLM prompt strategies."""

    backend: Literal["openai", "transformers"] = Field(
        "openai",
        description="openai: any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp, TGI); "
        "transformers: a local causal LM (hub id or folder).",
    )
    model: str = Field(description="Model name on the server, or a transformers id / folder.")
    base_url: str | None = Field(
        None, description="Server URL, e.g. http://127.0.0.1:8000/v1 (vLLM) or :11434/v1 (Ollama)."
    )
    api_key_env: str | None = Field(
        "OPENAI_API_KEY",
        description="Name of the environment variable holding the API key (never the key itself); "
        "null for local servers without auth.",
    )
    temperature: float = Field(0.8, ge=0, le=2)
    max_tokens: int = Field(512, ge=1)
    concurrency: int = Field(8, ge=1, le=256, description="Requests in flight at once.")
    max_retries: int = Field(4, ge=0, le=20)
    timeout: float = Field(60.0, gt=0, description="Seconds per request.")
    structured_output: Literal["auto", "json_schema", "off"] = Field(
        "auto", description="Ask the server for JSON-schema output (auto: try, fall back to text)."
    )
    batch_size: int = Field(8, ge=1, description="Prompts per generate() call (transformers).")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: str = "auto"

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and (not v.replace("_", "").isalnum() or v.startswith("sk-")):
            raise ValueError(
                "give the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key"
            )
        return v


PROMPT_STRATEGIES = ("template", "fakeit", "synclr", "synthclip", "metaprompt", "file")


class PromptsSpec(Strict):
    """How class names become text prompts (the prompts stage writes prompts.jsonl)."""

    strategy: Literal["template", "fakeit", "synclr", "synthclip", "metaprompt", "file"] = Field(
        "template",
        description="template, fakeit (no LLM); synclr, synthclip, metaprompt (LLM); "
        "file (import captions).",
    )
    per_class: int = Field(20, ge=1, description="Target number of distinct prompts per class.")
    template: str = Field("a photo of a {class}", description="'{class}' is the class name.")
    templates: list[str] | Literal["photo"] | None = Field(
        None, description="Several templates (overrides 'template'); 'photo' = the shipped set."
    )
    slots: dict[str, list[str]] = Field(
        {}, description="Values for other {slot}s in templates, e.g. {background: [a beach, …]}."
    )
    combine: Literal["sample", "cross"] = Field(
        "sample", description="sample: random slot values; cross: every combination in order."
    )
    llm: LLMSpec | None = None
    metaprompts: int = Field(
        5, ge=1, description="metaprompt strategy: scene directions (stage 1)."
    )
    file: Path | None = Field(
        None, description="strategy file: 'caption => class' lines or captions_single_labeled JSON."
    )
    label_check: Literal["repair", "drop", "off"] = Field(
        "repair", description="A caption must name its class (or a synonym): repair it or drop it."
    )
    near_duplicate: float = Field(
        0.85, gt=0, le=1, description="Token-set similarity at which two prompts are duplicates."
    )
    max_rounds: int = Field(
        5, ge=1, le=50, description="Requests for more when short of per_class."
    )
    diversity_model: str | None = Field(
        None,
        description="Local sentence-embedding model (transformers id or folder) for the diversity "
        "report; default: token overlap.",
    )

    @field_validator("template")
    @classmethod
    def _has_class_slot(cls, v: str) -> str:
        if "{class}" not in v:
            raise ValueError("template must contain '{class}'")
        return v

    @field_validator("templates")
    @classmethod
    def _all_have_class_slot(cls, v: list[str] | str | None) -> list[str] | str | None:
        if isinstance(v, list):
            if not v:
                raise ValueError("templates is empty; give at least one or omit it")
            missing = [t for t in v if "{class}" not in t]
            if missing:
                raise ValueError(f"every template must contain '{{class}}' (not: {missing[0]!r})")
        return v

    @model_validator(mode="after")
    def _strategy_needs(self) -> PromptsSpec:
        if self.strategy in ("synclr", "synthclip", "metaprompt") and self.llm is None:
            raise ValueError(f"strategy '{self.strategy}' needs an 'llm' section (backend, model)")
        if self.strategy == "file" and self.file is None:
            raise ValueError("strategy 'file' needs 'file': a caption file to import")
        return self


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

    images_per_class: int = Field(
        100,
        ge=1,
        description="Items per class. For real-image modes (img2img, inpaint): at most this many "
        "(real image, variant) items per class.",
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


class FidelitySpec(Strict):
    """FID, KID, precision/recall, density/coverage, diversity and CLIP score of the synthetic
    set against the real one, overall and per class (``evaluate/fidelity.json``)."""

    enabled: bool = Field(
        True, description="Compute the metrics when there are synthetic images (a few seconds)."
    )
    extractor: str = Field(
        "auto",
        description="Feature extractor: auto (inception if inception_weights is set, else "
        "classifier), inception, classifier (trained on the real train split), "
        "torchscript:<file>, torchvision:<arch> or timm:<arch> (with 'weights').",
    )
    inception_weights: Path | None = Field(
        None,
        description="Local Inception-v3 weights: torch-fidelity's pt_inception-2015-12-05 .pth "
        "(standard FID) or torchvision's inception_v3 weights (.pth / .safetensors).",
    )
    classifier_epochs: int | None = Field(
        10,
        ge=1,
        description="Training epochs of the 'classifier' extractor (on real train, selected on "
        "val); null: evaluate.epochs.",
    )
    weights: Path | None = Field(
        None, description="A .safetensors state dict for a torchvision:/timm: extractor."
    )
    extractor_image_size: int = Field(
        224, ge=8, description="Input size of a torchscript:/torchvision:/timm: extractor."
    )
    real_split: Literal["train", "val"] = Field(
        "train", description="The real split the synthetic images are compared with."
    )
    max_images_per_class: int = Field(
        500, ge=2, description="Seeded subsample per class and set (bounds time and memory)."
    )
    kid_subset_size: int = Field(
        100, ge=2, description="KID subset size (shrinks to a smaller set's size)."
    )
    kid_subsets: int = Field(50, ge=1, description="Random KID subsets averaged.")
    k: int = Field(5, ge=1, description="Nearest neighbours for precision/recall/density/coverage.")
    clip_model: str | None = Field(
        None,
        description="Local CLIP (transformers folder or cached hub id) for the CLIP score; "
        "null skips it.",
    )
    batch_size: int = Field(64, ge=1, description="Images per feature-extractor batch.")
    device: str = "auto"


class EvaluateSpec(Strict):
    """Classification Accuracy Score: train on each set, test on held-out real images."""

    train_sets: list[Literal["real", "synthetic", "real+synthetic"]] = Field(
        ["real", "synthetic", "real+synthetic"], min_length=1
    )
    classifier: str = Field(
        "small_cnn",
        description="small_cnn, a torchvision model name (resnet18, ...), or timm:<name>.",
    )
    image_size: int | None = Field(
        None, ge=4, description="Resize every image to this size; default: the real images' size."
    )
    channels: Literal[1, 3] | None = Field(None, description="Default: the real images' channels.")
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    seeds: list[int] = Field([0], min_length=1)
    augment: bool | Literal["shift", "shift+flip"] = Field(
        True,
        description="true/shift: random shifts of up to 1/8 of the side (random crop of the "
        "zero-padded image); shift+flip also flips left-right (natural images, not digits or "
        "text); false: none. Runs on the training device.",
    )
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw", description="adamw, or sgd with momentum 0.9 and Nesterov; both cosine-annealed."
    )
    classifier_weights: Path | None = Field(
        None,
        description="Start from these local weights (.safetensors, or a .pt/.pth state dict) "
        "instead of from scratch; the head is re-initialised when its shape differs.",
    )
    real_batch_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Mixed sets: this share of every batch is real, the rest synthetic (like "
        "--real-bs/--syn-bs); an epoch is one pass over the real images. null: concatenate.",
    )
    real_batchnorm: bool = Field(
        False,
        description="Mixed sets: after every epoch, re-estimate batch-norm statistics on the "
        "real train images only (AdaBN), so evaluation on real images uses real statistics.",
    )
    ema_epochs: float | None = Field(
        None,
        gt=0,
        description="Score and keep an exponential moving average of the classifier's weights "
        "(and batch-norm statistics) over about this many recent epochs instead of the raw "
        "weights: smooths the epoch-to-epoch noise that model selection on a small validation "
        "split would otherwise pick from. null: the raw weights.",
    )
    synthetic_multipliers: list[float] = Field(
        [],
        description="Scaling study: also train on synthetic sets of k x the real train size "
        "(per class), e.g. [0.5, 1, 2, 4].",
    )
    real_subsets: list[float] = Field(
        [],
        description="Sample-complexity study: also train on these fractions of the real train "
        "split, alone and with all synthetic images, e.g. [0.1, 0.25, 0.5].",
    )
    device: str = "auto"
    trackers: list[Literal["jsonl", "tensorboard", "wandb", "mlflow"]] = Field(
        ["jsonl"],
        description="Training curves go to: jsonl (evaluate/metrics.jsonl), tensorboard, wandb "
        "(offline) or mlflow (file store in the run folder).",
    )
    synthetic_dir: Path | None = Field(
        None, description="Evaluate another synthetic ImageFolder instead of this run's images."
    )
    fidelity: FidelitySpec = Field(FidelitySpec(), description="Fidelity and diversity metrics.")

    @field_validator("synthetic_multipliers")
    @classmethod
    def _positive_multipliers(cls, v: list[float]) -> list[float]:
        if any(k <= 0 for k in v):
            raise ValueError("every multiplier must be > 0, e.g. [0.5, 1, 2, 4]")
        return sorted(set(v))

    @field_validator("real_subsets")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in v):
            raise ValueError("every real subset is a fraction between 0 and 1, e.g. [0.1, 0.5]")
        return sorted(set(v))


class ReportSpec(Strict):
    """The HTML report."""

    enabled: bool = True
    samples_per_class: int = Field(8, ge=1, le=64)


TUNABLE_SECTIONS = ("generate", "prompts", "adapt")


class TuneParam(Strict):
    """One knob of a tuning search space: a range (``low``, ``high``) or a list of ``choices``.

    Int fields (e.g. generate.generator.steps) are searched as integers, float fields as floats."""

    low: float | None = Field(None, description="Range start (inclusive).")
    high: float | None = Field(None, description="Range end (inclusive).")
    log: bool = Field(False, description="Search the range on a log scale.")
    step: float | None = Field(None, gt=0, description="Range step (int ranges default to 1).")
    choices: list[str | int | float | bool | None] | None = Field(
        None, min_length=1, description="Categorical values (instead of low/high)."
    )

    @model_validator(mode="after")
    def _range_or_choices(self) -> TuneParam:
        has_range = self.low is not None or self.high is not None
        if self.choices is not None:
            if has_range or self.log or self.step is not None:
                raise ValueError("give either choices or low/high (with log/step), not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices (a list)")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self


class TuneSpec(Strict):
    """``synthset tune``: an Optuna search over generation knobs that maximizes the validation
    accuracy of a short proxy classifier trained on the synthetic images only."""

    space: dict[str, TuneParam] = Field(
        {},
        description="Knobs by dotted recipe path, e.g. {generate.generator.guidance_scale: "
        "{low: 0.5, high: 3}, generate.generator.steps: {choices: [10, 20, 30]}}.",
    )
    stages: list[dict[str, TuneParam]] = Field(
        [],
        description="Several spaces searched one after another, each stage fixing the best "
        "values of the ones before (instead of 'space').",
    )
    n_trials: int = Field(8, ge=1, description="Finished trials per stage (a rerun tops up).")
    timeout: float | None = Field(
        None, gt=0, description="Stop starting new trials of a stage after this many seconds."
    )
    images_per_class: int = Field(
        20, ge=1, description="Synthetic images per class of each trial (smaller than a full run)."
    )
    proxy_epochs: int = Field(8, ge=1, description="Epochs of each trial's proxy classifier.")
    start_from_recipe: bool = Field(
        True,
        description="The first trial of a study tries the recipe's own values (those inside "
        "the space), so the best found is never worse than them on the proxy.",
    )
    sampler: Literal["tpe", "random"] = Field(
        "tpe", description="Optuna sampler, seeded with the recipe seed."
    )
    pruner: Literal["median", "hyperband", "none"] = Field(
        "median", description="Stop unpromising trials early on their per-epoch val accuracy."
    )
    pruner_startup_trials: int = Field(
        3, ge=0, description="median: trials that are never pruned, to collect a baseline."
    )
    pruner_warmup_epochs: int = Field(
        2, ge=0, description="median: epochs of every trial that are never pruned."
    )

    @field_validator("space")
    @classmethod
    def _space_paths(cls, v: dict[str, TuneParam]) -> dict[str, TuneParam]:
        for path in v:
            check_tune_path(path)
        return v

    @field_validator("stages")
    @classmethod
    def _stage_paths(cls, v: list[dict[str, TuneParam]]) -> list[dict[str, TuneParam]]:
        for i, stage in enumerate(v):
            if not stage:
                raise ValueError(f"stage {i + 1} is empty; give at least one knob")
            for path in stage:
                check_tune_path(path)
        return v

    @model_validator(mode="after")
    def _one_space(self) -> TuneSpec:
        if bool(self.space) == bool(self.stages):
            raise ValueError("give exactly one of 'space' (one search) or 'stages' (several)")
        return self

    def spaces(self) -> list[dict[str, TuneParam]]:
        """The search spaces in the order they are searched."""
        return list(self.stages) if self.stages else [dict(self.space)]


def tune_field(path: str) -> Any:
    """The pydantic ``FieldInfo`` a dotted recipe path names (see :func:`check_tune_path`)."""
    current: Any = Recipe
    field = None
    for part in path.split("."):
        field = current.model_fields[part]
        current = _model_in(field.annotation)
    return field


def check_tune_path(path: str) -> None:
    """Raise ValueError unless ``path`` names a tunable value of the recipe model."""
    parts = path.split(".")
    if parts[0] not in TUNABLE_SECTIONS:
        raise ValueError(
            f"{path!r}: only knobs under {', '.join(TUNABLE_SECTIONS)} can be tuned "
            "(real data, classes, seed and evaluation stay fixed)"
        )
    current: Any = Recipe
    for i, part in enumerate(parts):
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            raise ValueError(f"{path!r}: {'.'.join(parts[:i])} is a value, not a section")
        field = current.model_fields.get(part)
        if field is None:
            where = ".".join(parts[:i]) or "the recipe"
            raise ValueError(
                f"{path!r} is not a recipe field; {where} has: {', '.join(current.model_fields)}"
            )
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        raise ValueError(f"{path!r} is a section; name one of its values, e.g. {path}.steps")


class Recipe(Strict):
    """A whole synthset run."""

    name: str = "synthset-run"
    seed: int = Field(0, ge=0, description="Every image's seed derives from this and its item id.")
    output_dir: Path = Path("runs/synthset-run")
    classes: ClassesSpec
    real: RealDataSpec | None = None
    adapt: AdaptSpec | None = None
    prompts: PromptsSpec = PromptsSpec()
    generate: GenerateSpec | None = Field(
        None,
        description="Omit to only evaluate an existing synthetic set (evaluate.synthetic_dir).",
    )
    evaluate: EvaluateSpec | None = None
    report: ReportSpec = ReportSpec()
    tune: TuneSpec | None = Field(
        None, description="'synthset tune': an Optuna search over generation knobs."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.tune is not None and (self.generate is None or self.real is None):
            raise ValueError(
                "'tune' generates trial datasets and scores them on real validation images: "
                "it needs 'generate' and 'real' sections"
            )
        gspec = self.generate
        if (
            self.tune is not None
            and gspec is not None
            and (gspec.generators is not None or gspec.generator.uses_real_images)
        ):
            raise ValueError(
                "'tune' searches one text-conditioned generator's knobs: use "
                "'generate.generator' without real-image modes (img2img, inpaint, strength)"
            )
        for gen in self.generate.members if self.generate is not None else []:
            if gen.kind == "tiny" and gen.model is None and self.adapt is None:
                raise ValueError(
                    "generate.generator.kind 'tiny' needs an 'adapt' section or generator.model"
                )
            if gen.kind in ("text2image", "img2img", "inpaint") and gen.model is None:
                raise ValueError(f"generate.generator.kind {gen.kind!r} needs generator.model")
            if gen.uses_real_images and self.real is None:
                raise ValueError(
                    f"generate.generator.kind {gen.kind!r} starts from real images: add a "
                    "'real' section (e.g. real: {source: imagefolder, path: data/train})"
                )
        if self.adapt is not None and self.real is None:
            raise ValueError("'adapt' trains on real images: add a 'real' section")
        if self.evaluate is not None:
            if self.real is None:
                raise ValueError("'evaluate' tests on real images: add a 'real' section")
            wants_synthetic = any("synthetic" in s for s in self.evaluate.train_sets)
            if wants_synthetic and self.generate is None and self.evaluate.synthetic_dir is None:
                raise ValueError(
                    "evaluate trains on synthetic images: add a 'generate' section or set "
                    "evaluate.synthetic_dir to an ImageFolder"
                )
        return self

    def fingerprint(self, *parts: str) -> str:
        """A short hash of the named recipe parts and the seed: what a stage's output depends on."""
        data = {p: _jsonable(getattr(self, p), _OWN_STAGE.get(p)) for p in parts}
        data["seed"] = self.seed
        # input files count by content, so editing a caption or class file redoes its stages
        inputs = {"classes": self.classes.file, "prompts": self.prompts.file}
        files = {p: _file_digest(inputs[p]) for p in parts if inputs.get(p)}
        if files:  # only then, so recipes without input files keep their fingerprints
            data["files"] = files
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _file_digest(path: Path | None) -> str | None:
    """sha256 of a file's bytes (None when it does not exist yet)."""
    if path is None or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


#: Sub-sections with a stage (and fingerprint) of their own: changing them redoes only that stage.
_OWN_STAGE: dict[str, set[str]] = {"evaluate": {"fidelity"}}


def _jsonable(value: Any, exclude: set[str] | None = None) -> Any:
    return value.model_dump(mode="json", exclude=exclude) if isinstance(value, BaseModel) else value


# ----------------------------------------------------------------------------- loading


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SynthsetError(
                f"--set {item!r}: write it as key.path=value, e.g. generate.steps=20"
            )
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise SynthsetError(f"--set {key}: '{part}' is a value, not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise SynthsetError(f"--set {key}: value is not valid YAML ({exc.problem})") from None
    return data


def load_recipe(path: Path | str, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML file, apply ``--set`` overrides and validate it."""
    path = Path(path)
    if not path.is_file():
        raise SynthsetError(f"recipe file not found: {path} (give the path to a .yaml recipe)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SynthsetError(f"recipe {path}{where}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise SynthsetError(f"recipe {path}: the top level must be a mapping of sections")
    return recipe_from_dict(apply_overrides(data, overrides or []))


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Validate a recipe dict, turning pydantic's report into one line."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise SynthsetError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    """The first error of a pydantic report as ``recipe error at a.b: what is wrong; the fix``."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    path = ".".join(loc)
    where = f"recipe error at {path}" if path else "recipe error"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(Recipe, err["loc"][:-1])
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"{where}: unknown key{hint}"
    msg = err["msg"].removeprefix("Value error, ")
    if (
        "input" in err
        and err["type"] not in ("missing",)
        and not isinstance(err["input"], dict | list)
    ):
        msg += f" (got {err['input']!r})"
    more = len(exc.errors()) - 1
    return f"{where}: {msg}" + (f" [+{more} more]" if more else "")


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model found by walking ``loc`` from ``model``."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside an annotation like ``X | None``, else the annotation."""
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML (every default written out)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
