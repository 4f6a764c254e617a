"""How varied the prompts are: per class count, unique ratio and mean pairwise similarity.

Similarity is token overlap (Jaccard over words) by default, or the cosine similarity of
mean-pooled text embeddings from a local transformers model (``AutoTokenizer``/``AutoModel``)
when ``model`` names one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from itertools import combinations
from typing import Any

from synthset.errors import SynthsetError
from synthset.prompts.base import PromptRecord, normalize, similarity

MAX_PER_CLASS = 100  # pairwise similarity uses at most this many prompts per class (sampled)


def diversity_report(records: Sequence[PromptRecord], model: str | None = None) -> dict[str, Any]:
    """Per-class and overall diversity of ``records``; the report names the method used."""
    by_class: dict[str, list[str]] = {}
    for r in records:
        by_class.setdefault(r.class_name, []).append(r.prompt)
    embed = _Embedder(model) if model else None
    per_class: dict[str, dict[str, Any]] = {}
    for name, prompts in by_class.items():
        sample = _sample(prompts, name)
        if len(sample) < 2:
            mean_sim = None
        elif embed is not None:
            mean_sim = embed.mean_pairwise_cosine(sample)
        else:
            pairs = list(combinations(sample, 2))
            mean_sim = sum(similarity(a, b) for a, b in pairs) / len(pairs)
        per_class[name] = {
            "count": len(prompts),
            "unique_ratio": len({normalize(p) for p in prompts}) / len(prompts),
            "mean_pairwise_similarity": mean_sim,
            "sampled": len(sample) < len(prompts),
        }
    sims = [v["mean_pairwise_similarity"] for v in per_class.values()]
    sims = [s for s in sims if s is not None]
    ratios = [v["unique_ratio"] for v in per_class.values()]
    return {
        "method": f"embedding_cosine:{model}" if model else "token_jaccard",
        "per_class": per_class,
        "overall": {
            "classes": len(per_class),
            "count": len(records),
            "unique_ratio": sum(ratios) / len(ratios) if ratios else None,
            "mean_pairwise_similarity": sum(sims) / len(sims) if sims else None,
        },
    }


def _sample(prompts: list[str], name: str) -> list[str]:
    if len(prompts) <= MAX_PER_CLASS:
        return prompts
    return random.Random(f"diversity:{name}").sample(prompts, MAX_PER_CLASS)


class _Embedder:
    """Mean-pooled last hidden states of a local transformers encoder, L2-normalized."""

    def __init__(self, model: str) -> None:
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModel.from_pretrained(model).eval()
        except (OSError, ValueError) as exc:
            raise SynthsetError(
                f"prompts.diversity_model: cannot load text model {model!r} ({exc}); give a "
                "local transformers folder or a cached model id, or leave it unset"
            ) from exc

    def mean_pairwise_cosine(self, texts: list[str], batch_size: int = 32) -> float:
        import torch

        chunks = []
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer(
                    texts[i : i + batch_size], padding=True, truncation=True, return_tensors="pt"
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                chunks.append(torch.nn.functional.normalize(pooled.float(), dim=-1))
        emb = torch.cat(chunks)
        sims = emb @ emb.T
        n = len(texts)
        off_diagonal = sims.sum() - sims.diagonal().sum()
        return float(off_diagonal / (n * (n - 1)))
