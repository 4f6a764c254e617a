"""``clip``: the CLIP score (``100 × max(cos, 0)``) of each image against its class's prompts
(``curate.clip_templates`` with the class name filled in), averaged over the templates."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from synthset.curate.base import ScoringContext
from synthset.recipe import CurateSpec


class ClipScore:
    name = "clip"
    uses_reference = False

    def __init__(self, spec: CurateSpec) -> None:
        self.spec = spec

    def settings(self) -> dict[str, Any]:
        return {"clip_model": self.spec.clip_model, "clip_templates": self.spec.clip_templates}

    @torch.no_grad()
    def score(self, ctx: ScoringContext) -> np.ndarray:
        from synthset.scoring.clip_score import ClipScorer, open_rgb

        assert self.spec.clip_model is not None  # the recipe checks
        clip = ClipScorer(self.spec.clip_model, ctx.device, "curate.clip_model")
        texts = []
        for name in ctx.class_names:
            prompts = [t.replace("{class}", name) for t in self.spec.clip_templates]
            emb = torch.nn.functional.normalize(clip.encode_texts(prompts).float(), dim=-1)
            texts.append(emb.cpu())
        text = torch.stack(texts)  # classes × templates × d
        out = []
        rows = ctx.synthetic
        for i in range(0, len(rows), self.spec.batch_size):
            batch = rows[i : i + self.spec.batch_size]
            img = clip.encode_images([open_rgb(r["path"]) for r in batch]).float().cpu()
            img = torch.nn.functional.normalize(img, dim=-1)
            own = text[torch.tensor([r["label"] for r in batch])]  # n × templates × d
            cos = torch.einsum("nd,ntd->nt", img, own)
            out.append((100.0 * cos.clamp(min=0)).mean(1))
        return torch.cat(out).double().numpy() if out else np.zeros(0)
