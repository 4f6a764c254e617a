"""CLIP score of each image against its prompt: ``100 * max(cos(image, text), 0)`` (Hessel et
al. 2021, as in torchmetrics' ``CLIPScore``), with a local CLIP: a transformers folder (or a
cached hub id), or ``open_clip:<architecture>@<checkpoint file>`` when open_clip is installed
(the architecture may be an open_clip model config ``.json`` file, for custom models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from synthset.errors import SynthsetError, first_line


class ClipScorer:
    """A loaded CLIP model with its image preprocessing and tokenizer."""

    def __init__(
        self, model: str, device: torch.device, field: str = "evaluate.fidelity.clip_model"
    ) -> None:
        self.device, self.field = device, field
        if model.startswith("open_clip:"):
            self._load_open_clip(model)
        else:
            self._load_transformers(model)

    def _load_transformers(self, model: str) -> None:
        from transformers import CLIPModel, CLIPProcessor

        try:
            clip = CLIPModel.from_pretrained(model).eval().to(self.device)
            processor = CLIPProcessor.from_pretrained(model)
        except (OSError, ValueError) as exc:
            raise SynthsetError(
                f"{self.field} {model!r}: cannot load a CLIP model and processor "
                f"({first_line(exc)}); give a local folder saved with save_pretrained"
            ) from None
        max_length = int(clip.config.text_config.max_position_embeddings)

        def images(batch: list[Image.Image]) -> torch.Tensor:
            pixels = processor(images=batch, return_tensors="pt")["pixel_values"]
            return _pooled(clip.get_image_features(pixel_values=pixels.to(self.device)))

        def texts(prompts: list[str]) -> torch.Tensor:
            tok = processor(
                text=prompts,
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length,
            )
            return _pooled(
                clip.get_text_features(
                    input_ids=tok["input_ids"].to(self.device),
                    attention_mask=tok["attention_mask"].to(self.device),
                )
            )

        self.encode_images, self.encode_texts = images, texts

    def _load_open_clip(self, model: str) -> None:
        arch, _, checkpoint = model.removeprefix("open_clip:").partition("@")
        what = f"{self.field} {model!r}"
        if not arch or not checkpoint or not Path(checkpoint).is_file():
            raise SynthsetError(
                f"{what}: write open_clip:<architecture or config .json>@<local checkpoint "
                "file>, e.g. open_clip:ViT-B-32@/models/clip.safetensors (the file must exist)"
            )
        try:
            import open_clip
        except ImportError:
            raise SynthsetError(f"{what} needs open_clip: pip install open_clip_torch") from None
        if arch.endswith(".json"):  # a custom architecture: open_clip's model config file
            if not Path(arch).is_file():
                raise SynthsetError(f"{what}: the model config {arch} does not exist")
            open_clip.add_model_config(arch)
            arch = Path(arch).stem
        try:
            clip, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=checkpoint, device=self.device
            )
            tokenizer = open_clip.get_tokenizer(arch)
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            raise SynthsetError(f"{what}: cannot load it ({first_line(exc)})") from None
        clip.eval()

        def images(batch: list[Image.Image]) -> torch.Tensor:
            return clip.encode_image(torch.stack([preprocess(im) for im in batch]).to(self.device))

        def texts(prompts: list[str]) -> torch.Tensor:
            return clip.encode_text(tokenizer(prompts).to(self.device))

        self.encode_images, self.encode_texts = images, texts

    @torch.no_grad()
    def __call__(self, images: list[Image.Image], prompts: list[str]) -> torch.Tensor:
        """One score per (image, prompt) pair."""
        if len(images) != len(prompts):
            raise ValueError("CLIP score needs one prompt per image")
        img = self.encode_images([im.convert("RGB") for im in images])
        txt = self.encode_texts(prompts)
        cos = torch.nn.functional.cosine_similarity(img.float(), txt.float(), dim=-1)
        return (100.0 * cos.clamp(min=0)).cpu()

    @torch.no_grad()
    def image_embeddings(self, images: list[Image.Image]) -> torch.Tensor:
        """Unit-length embeddings (float, on the CPU) of ``images``."""
        out = self.encode_images([im.convert("RGB") for im in images]).float().cpu()
        return torch.nn.functional.normalize(out, dim=-1)

    @torch.no_grad()
    def class_embeddings(self, names: list[str], templates: list[str]) -> torch.Tensor:
        """One unit-length text embedding per class: the mean over ``templates`` (each with
        ``{}`` for the class name) of their unit embeddings, as CLIP's zero-shot classifier."""
        rows = []
        for name in names:
            text = self.encode_texts([t.format(name) for t in templates]).float().cpu()
            rows.append(torch.nn.functional.normalize(text, dim=-1).mean(0))
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)

    def score_files(
        self, paths: list[Path], prompts: list[str], batch_size: int = 32
    ) -> torch.Tensor:
        """Scores of image files against their prompts, in batches."""
        out = []
        for i in range(0, len(paths), batch_size):
            images = [open_rgb(p) for p in paths[i : i + batch_size]]
            out.append(self(images, prompts[i : i + batch_size]))
        return torch.cat(out) if out else torch.empty(0)


def _pooled(output: Any) -> torch.Tensor:
    """The embedding tensor (transformers 5 may return a model output holding it)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise SynthsetError(f"CLIP score: cannot read image {path} ({exc})") from None
