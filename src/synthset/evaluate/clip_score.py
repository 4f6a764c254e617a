"""CLIP score of each image against its prompt: ``100 * max(cos(image, text), 0)`` (Hessel et
al. 2021, as in torchmetrics' ``CLIPScore``), with a local transformers CLIP model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from synthset.errors import SynthsetError


class ClipScorer:
    """A loaded CLIP model and processor (a local folder or a cached hub id)."""

    def __init__(self, model: str, device: torch.device) -> None:
        from transformers import CLIPModel, CLIPProcessor

        try:
            self.model = CLIPModel.from_pretrained(model).eval().to(device)
            self.processor = CLIPProcessor.from_pretrained(model)
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SynthsetError(
                f"evaluate.fidelity.clip_model {model!r}: cannot load a CLIP model and processor "
                f"({first}); give a local folder saved with save_pretrained"
            ) from None
        self.device = device
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    @staticmethod
    def _tensor(output: Any) -> torch.Tensor:
        """transformers 5 may return a model output instead of the pooled embedding tensor."""
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    @torch.no_grad()
    def __call__(self, images: list[Image.Image], prompts: list[str]) -> torch.Tensor:
        """One score per (image, prompt) pair."""
        if len(images) != len(prompts):
            raise ValueError("CLIP score needs one prompt per image")
        text = self.processor(
            text=prompts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_length,
        )
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        img = self._tensor(
            self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device))
        )
        txt = self._tensor(
            self.model.get_text_features(
                input_ids=text["input_ids"].to(self.device),
                attention_mask=text["attention_mask"].to(self.device),
            )
        )
        cos = torch.nn.functional.cosine_similarity(img.float(), txt.float(), dim=-1)
        return (100.0 * cos.clamp(min=0)).cpu()

    def score_files(
        self, paths: list[Path], prompts: list[str], batch_size: int = 32
    ) -> torch.Tensor:
        """Scores of image files against their prompts, in batches."""
        out = []
        for i in range(0, len(paths), batch_size):
            images = [_open(p) for p in paths[i : i + batch_size]]
            out.append(self(images, prompts[i : i + batch_size]))
        return torch.cat(out) if out else torch.empty(0)


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise SynthsetError(f"CLIP score: cannot read image {path} ({exc})") from None
