"""Pretrain a tiny *text-conditional* Stable Diffusion pipeline on CPU: the stand-in for a
downloaded base model, so the adapt methods are proven on the very code users run on GPUs.

It is a real ``StableDiffusionPipeline`` folder (UNet with cross-attention, CLIP text encoder,
byte-level CLIP tokenizer, VAE, DDIM scheduler) that loads with ``from_pretrained``. It is
trained from the real train split in two resumable phases of the shared loop:

1. a one-level ``AutoencoderKL`` (latent = pixel grid, 4 channels) learns to reconstruct the
   images; its scaling factor is set so latents have unit variance;
2. UNet and text encoder learn jointly to denoise the latents given a caption (10 % of captions
   dropped to "" for classifier-free guidance), with v-prediction as Stable Diffusion 2 does.

Captions come in two kinds (``captions``):

- ``generic``: no class words. Each image's caption describes what anyone sees without labels,
  measured on its pixels: how much ink (thin / regular / bold), how wide the figure is, whether
  it encloses a loop and where (top / middle / low), where its ink sits (heavy top / heavy low)
  and which way it leans, in a few phrasings ("a bold narrow digit, loop top, leans left"). The
  base knows the domain and a visual vocabulary and listens to its text, but not the labels:
  the situation of Stable Diffusion on a new dataset.
- ``class``: the class name in a few templates ("a handwritten digit 3", ...), for the classes
  in ``class_ids`` only (the others are never seen): a base to adapt to new classes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from synthset.adapt.tiny_tokenizer import TINY_TEXT_VOCAB_SIZE, build_tiny_clip_tokenizer
from synthset.adapt.training import LoopSettings, train, write_folder_atomic
from synthset.data.images import open_image
from synthset.data.splits import Samples
from synthset.errors import SynthsetError

BASE_META = "synthset_base.json"
MAX_TOKENS = 77  # caption length in tokens (the byte-level tokenizer is ~1 token per character)
CAPTION_DROPOUT = 0.1
GENERIC_FORMS = (
    "a {ink} {width} digit, {loop}, {mass}, {lean}",
    "a {width} handwritten digit, {ink}, {loop}, {lean}, {mass}",
    "{loop}, {mass}: a {ink} digit, {width}, {lean}",
    "a scanned {ink} digit, {lean}, {width}, {mass}, {loop}",
)
CLASS_FORMS = (
    "a handwritten digit {name}",
    "the digit {name}, handwritten",
    "a scanned handwritten {name}",
)
INK = ("thin", "regular", "bold")
WIDTH = ("narrow", "medium", "wide")
MASS = ("heavy top", "even", "heavy low")
LEAN = ("leans left", "upright", "leans right")
INK_LEVEL = 0.35  # a pixel is ink above this (images in [0, 1]): the loop finder's threshold


@dataclass(frozen=True)
class BaseSettings:
    """What to pretrain: caption kind, which classes, sizes and steps."""

    captions: Literal["generic", "class"] = "generic"
    class_ids: tuple[int, ...] | None = None  # None: every class
    image_size: int = 8
    #: where the UNet cross-attends to the caption: "mid" (the 4x4 middle block only) or
    #: "low" (also the half-resolution blocks, so the caption's words localise in the image:
    #: what cross-attention labels need)
    cross_attention: Literal["mid", "low"] = "mid"
    #: the attention-pooled caption joins the time embedding (a shortcut past cross-attention:
    #: with it, a tiny model need not attend to a word where its object is drawn)
    pooled_text: bool = True
    #: transformer layers of the text encoder. CLIP's are causal, so every token after the class
    #: word (the end token and the padding, most of the context) carries the class too, and a
    #: tiny model can read it there instead of at the word. 0: each token is its own embedding
    #: (plus position), so the class is only at its word: the word has to be attended where
    #: its object is drawn.
    text_layers: int = 3
    vae_steps: int = 600
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0


def pretrain_tiny_base(
    train_set: Samples,
    class_names: list[str],
    settings: BaseSettings,
    out_dir: Path,
    progress: bool = True,
    captions: list[str] | None = None,
) -> Path:
    """Pretrain (or reuse, when ``out_dir`` holds a base made from the same data and settings)
    the tiny pipeline; returns ``out_dir``. ``captions``: one per image of ``train_set``, used
    instead of the ``settings.captions`` kind (composited images naming several objects)."""
    out_dir = Path(out_dir)
    if captions is not None and len(captions) != len(train_set):
        raise SynthsetError(
            f"pretrain-tiny: {len(captions)} captions for {len(train_set)} images; give one each"
        )
    chosen = [
        i
        for i, (_, lbl) in enumerate(train_set)
        if settings.class_ids is None or lbl in settings.class_ids
    ]
    keep = [train_set[i] for i in chosen]
    if not keep:
        raise SynthsetError("pretrain-tiny: no training images for the chosen classes")
    kept_captions = None if captions is None else [captions[i] for i in chosen]
    fingerprint = _fingerprint(keep, class_names, settings, kept_captions)
    meta_file = out_dir / BASE_META
    if meta_file.is_file() and json.loads(meta_file.read_text())["fingerprint"] == fingerprint:
        return out_dir
    pixels = _pixels(keep, settings.image_size)
    if kept_captions is None:
        kept_captions = _captions(pixels, [lbl for _, lbl in keep], class_names, settings.captions)
    parts = out_dir.parent / f"{out_dir.name}.parts"
    vae_dir, denoiser_dir = parts / "vae", parts / "denoiser"
    if not (vae_dir / "config.json").is_file():
        torch.manual_seed(settings.seed)
        vae_task = VaeTask(pixels)
        vae_settings = LoopSettings(
            steps=settings.vae_steps,
            lr=2e-3,
            warmup_steps=50,
            desc="pretrain (vae)",
            image_size=settings.image_size,
        )
        train(vae_task, vae_settings, vae_dir, fingerprint + "vae", settings.seed, progress)
    vae = _load_vae(vae_dir)
    if not (denoiser_dir / "unet" / "config.json").is_file():
        torch.manual_seed(settings.seed + 1)
        unet = _new_unet(settings.image_size, settings.cross_attention, settings.pooled_text)
        task = DenoiserTask(
            vae,
            pixels,
            kept_captions,
            parts / "tokenizer",
            settings.batch_size,
            unet,
            settings.text_layers,
        )
        loop = LoopSettings(
            steps=settings.steps,
            lr=settings.lr,
            warmup_steps=100,
            ema_decay=0.999,
            desc="pretrain (unet + text)",
            image_size=settings.image_size,
        )
        train(task, loop, denoiser_dir, fingerprint + "unet", settings.seed, progress)
    meta = {
        "fingerprint": fingerprint,
        "settings": asdict(settings),
        "classes_seen": sorted({class_names[lbl] for _, lbl in keep}),
        "images": len(keep),
        "caption_examples": kept_captions[:5],
    }
    write_folder_atomic(out_dir, lambda tmp: _assemble(vae, denoiser_dir, tmp, meta))
    shutil.rmtree(parts, ignore_errors=True)
    return out_dir


# ----------------------------------------------------------------------------- data


def _fingerprint(
    samples: Samples, class_names: list[str], settings: BaseSettings, captions: list[str] | None
) -> str:
    rows = [[str(p), lbl, p.stat().st_size] for p, lbl in samples]
    data = {"v": 4, "rows": rows, "names": class_names, "settings": asdict(settings)}
    if captions is not None:
        data["captions"] = captions
    blob = json.dumps(data, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _pixels(samples: Samples, size: int) -> torch.Tensor:
    """RGB images in [-1, 1], (N, 3, size, size)."""
    arrays = []
    for path, _ in samples:
        img = open_image(path, "RGB", "pretrain-tiny: real train")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(img, dtype=np.float32))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0


def _tertile(values: np.ndarray) -> np.ndarray:
    """0, 1 or 2: which third of ``values`` each value falls in."""
    cuts = np.quantile(values, [1 / 3, 2 / 3])
    return np.searchsorted(cuts, values, side="right")


def _loop(ink: np.ndarray) -> str:
    """Where the figure encloses background (a loop), from one image's ink map in [0, 1]."""
    from scipy import ndimage

    background, n = ndimage.label(ink <= INK_LEVEL)
    edge = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    holes = np.isin(background, np.setdiff1d(np.arange(1, n + 1), edge))
    if not holes.any():
        return "no loop"
    row = np.nonzero(holes)[0].mean() / (ink.shape[0] - 1)
    return "loop top" if row < 0.4 else "loop low" if row > 0.6 else "loop middle"


def class_captions(labels: list[int], class_names: list[str]) -> list[str]:
    """The ``class`` kind of caption: each image's class name in CLASS_FORMS, cycling."""
    return [
        CLASS_FORMS[i % len(CLASS_FORMS)].format(name=class_names[lbl])
        for i, lbl in enumerate(labels)
    ]


def _captions(
    pixels: torch.Tensor, labels: list[int], class_names: list[str], captions: str
) -> list[str]:
    """One caption per image (see the module docstring); the phrasing cycles with the index."""
    if captions == "class":
        return class_captions(labels, class_names)
    ink_map = ((pixels.mean(1) + 1) / 2).numpy()  # (N, H, W) in [0, 1]
    total = ink_map.sum((1, 2)) + 1e-6
    h, w = ink_map.shape[1:]
    rows = (ink_map.sum(2) * np.arange(h)).sum(1) / total  # centre of mass, top → bottom
    cols = ink_map.sum(1)  # (N, W) ink per column
    inked = cols > INK_LEVEL
    spans = np.array([np.ptp(np.nonzero(c)[0]) + 1 if c.any() else 0 for c in inked])
    top, bottom = ink_map[:, : h // 2], ink_map[:, h // 2 :]
    lean = _centre(top.sum(1), w) - _centre(bottom.sum(1), w)  # > 0: the top sits further right
    ink, width, mass, leans = (
        _tertile(total),
        _tertile(spans.astype(float)),
        _tertile(rows),
        _tertile(lean),
    )
    return [
        GENERIC_FORMS[i % len(GENERIC_FORMS)].format(
            ink=INK[ink[i]],
            width=WIDTH[width[i]],
            loop=_loop(ink_map[i]),
            mass=MASS[mass[i]],
            lean=LEAN[leans[i]],
        )
        for i in range(len(labels))
    ]


def generic_captions(samples: Samples, image_size: int = 8) -> list[str]:
    """The ``generic`` caption of each image (label-free shape words measured on its pixels),
    as the base is pretrained with them."""
    return _captions(_pixels(samples, image_size), [lbl for _, lbl in samples], [], "generic")


def _centre(cols: np.ndarray, width: int) -> np.ndarray:
    """Horizontal centre of mass of per-column ink (N, W)."""
    return (cols * np.arange(width)).sum(1) / (cols.sum(1) + 1e-6)


# ----------------------------------------------------------------------------- phase 1: VAE


def _new_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(32,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=8,
    )


def _load_vae(folder: Path) -> Any:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(folder)
    return vae.requires_grad_(False).eval()


class VaeTask:
    """Reconstruction + a light KL term; the saved VAE carries the latents' scaling factor."""

    KL_WEIGHT = 1e-6

    def __init__(self, pixels: torch.Tensor) -> None:
        self.device = torch.device("cpu")
        self.pixels = pixels
        self.vae = _new_vae().train()

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.vae.parameters())

    def loss(self, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(self.pixels), (128,), generator=gen)
        x = self.pixels[idx]
        posterior = self.vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = self.vae.decode(z).sample
        return torch.nn.functional.mse_loss(recon, x) + self.KL_WEIGHT * posterior.kl().mean()

    def validation_loss(self) -> float | None:
        return None

    @torch.no_grad()
    def save(self, out_dir: Path) -> None:
        latents = torch.cat(
            [
                self.vae.encode(self.pixels[i : i + 256]).latent_dist.mean
                for i in range(0, len(self.pixels), 256)
            ]
        )
        self.vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
        self.vae.save_pretrained(out_dir, safe_serialization=True)


# ----------------------------------------------------------------------------- phase 2: UNet


def _new_unet(image_size: int = 8, cross_attention: str = "mid", pooled_text: bool = True) -> Any:
    from diffusers import UNet2DConditionModel

    low = cross_attention == "low"
    return UNet2DConditionModel(
        sample_size=image_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        # the mid block always cross-attends; "low" adds the half-resolution blocks
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D" if low else "DownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D" if low else "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
        addition_embed_type="text" if pooled_text else None,  # pooled text + time embedding
        attention_head_dim=8,
        norm_num_groups=32,
    )


def _new_text_encoder(tokenizer: Any, layers: int = 3) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_hidden_layers=layers,
        max_position_embeddings=MAX_TOKENS,
        vocab_size=TINY_TEXT_VOCAB_SIZE,
    )
    return CLIPTextModel(config)


def _noise_scheduler() -> Any:
    """Stable Diffusion 2's training schedule: scaled-linear betas, v-prediction. (With
    ε-prediction a tiny model learns to listen to its text far more slowly: at high noise ε is
    almost the input itself, so the caption barely changes the loss; v asks for the image
    there, which the caption helps predict.)"""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
    )


class DenoiserTask:
    """UNet + text encoder trained together on captioned latents."""

    def __init__(
        self,
        vae: Any,
        pixels: torch.Tensor,
        captions: list[str],
        tokenizer_dir: Path,
        batch_size: int,
        unet: Any = None,
        text_layers: int = 3,
    ) -> None:
        self.device = torch.device("cpu")
        self.tokenizer = build_tiny_clip_tokenizer(tokenizer_dir, max_length=MAX_TOKENS)
        self.unet = (unet if unet is not None else _new_unet()).train()
        self.text_encoder = _new_text_encoder(self.tokenizer, text_layers).train()
        self.scheduler = _noise_scheduler()
        with torch.no_grad():
            mean = torch.cat(
                [
                    vae.encode(pixels[i : i + 256]).latent_dist.mean
                    for i in range(0, len(pixels), 256)
                ]
            )
        self.latents = mean * vae.config.scaling_factor
        self.ids = self._tokenize(captions)
        self.empty = self._tokenize([""])[0]
        self.batch_size = batch_size

    def _tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(
            texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
        ).input_ids

    def parameters(self) -> list[torch.nn.Parameter]:
        return [*self.unet.parameters(), *self.text_encoder.parameters()]

    def loss(self, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(self.latents), (self.batch_size,), generator=gen)
        x0, ids = self.latents[idx], self.ids[idx].clone()
        drop = torch.rand(len(idx), generator=gen) < CAPTION_DROPOUT
        ids[drop] = self.empty
        t = torch.randint(0, 1000, (len(idx),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        noisy = self.scheduler.add_noise(x0, noise, t)
        text = self.text_encoder(ids)[0]
        pred = self.unet(noisy, t, encoder_hidden_states=text).sample
        return torch.nn.functional.mse_loss(pred, self.scheduler.get_velocity(x0, noise, t))

    def validation_loss(self) -> float | None:
        return None

    def save(self, out_dir: Path) -> None:
        self.unet.save_pretrained(out_dir / "unet", safe_serialization=True)
        self.text_encoder.save_pretrained(out_dir / "text_encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(out_dir / "tokenizer")


def _assemble(vae: Any, denoiser_dir: Path, out_dir: Path, meta: dict[str, Any]) -> None:
    """Save the whole ``StableDiffusionPipeline`` (DDIM for sampling) and its metadata."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    scheduler = DDIMScheduler.from_config(
        _noise_scheduler().config, clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=CLIPTextModel.from_pretrained(denoiser_dir / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(denoiser_dir / "tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(denoiser_dir / "unet"),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / BASE_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
