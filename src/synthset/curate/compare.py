"""How near-duplicates are measured (``curate.compare_by``), for the leak check against the real
evaluation splits and for dedup within the synthetic set. Every method gives a similarity in
[0, 1]-ish where higher means closer:

- ``pixels`` (default): the best normalised correlation of the grey images over small shifts
  (``curate/similarity.py``); catches shifted and re-encoded copies, costs O(N·M·shifts).
- ``phash``: the perceptual hash (imagehash's DCT pHash, 64 bits) — the fraction of equal bits;
  robust to re-encoding, resizing and small brightness changes, and cheap at any scale.
- ``features``: the cosine similarity of the reference classifier's penultimate features (the
  classifier the label_agreement and typicality scorers use, trained on real train); catches
  copies that moved more than the shift window.

``phash`` and ``features`` are codes: similarity is a dot product of two rows, so comparing N
synthetic images with M real ones is one chunked matrix product.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from synthset.curate.base import ScoringContext
from synthset.data.splits import Samples
from synthset.errors import SynthsetError
from synthset.evaluate.tensors import TensorSet, load_tensors
from synthset.evaluate.train import EVAL_BATCH, to_input

PHASH_SIZE = 32  # imagehash resizes to 32x32 (hash_size 8 x highfreq_factor 4) before the DCT
CHUNK = 4096


def phash_codes(images: torch.Tensor) -> torch.Tensor:
    """Unit rows whose dot product is the fraction of equal pHash bits (uint8 ``N×1×S×S``)."""
    try:
        import imagehash
    except ImportError:
        raise SynthsetError(
            "curate.compare_by phash needs imagehash: pip install imagehash"
        ) from None
    bits = [
        imagehash.phash(Image.fromarray(img[0].numpy(), mode="L")).hash.flatten() for img in images
    ]
    signs = torch.from_numpy(np.array(bits, dtype=np.float32)) * 2 - 1  # N×64 of ±1
    # [v/8, 1] / sqrt(2): a·b = (v·w / 64 + 1) / 2 = the share of equal bits
    codes = torch.cat([signs / 8.0, torch.ones(len(signs), 1)], dim=1)
    return codes / np.sqrt(2.0)


@torch.no_grad()
def feature_codes(ctx: ScoringContext, data: TensorSet) -> torch.Tensor:
    """L2-normalised penultimate features of the reference classifier."""
    from synthset.scoring.features import penultimate

    extract = penultimate(ctx.reference, "curate.compare_by features")

    def features(data: TensorSet) -> torch.Tensor:
        parts = [
            extract(to_input(data.images[i : i + EVAL_BATCH].to(ctx.device))).flatten(1).float()
            for i in range(0, len(data), EVAL_BATCH)
        ]
        return torch.cat(parts).cpu()

    # centred on the real train images: raw ReLU features all point one way (cosines near 1)
    centre = features(ctx.real_tensors("train")).mean(0)
    return torch.nn.functional.normalize(features(data) - centre, dim=1)


def codes_of(ctx: ScoringContext, samples: Samples, what: str) -> torch.Tensor:
    """The ``compare_by`` codes of ``samples`` (phash or features)."""
    size, channels = ctx.image_format
    if ctx.spec.compare_by == "phash":
        grey = load_tensors(samples, PHASH_SIZE, 1, what, ctx.tensor_cache)
        return phash_codes(grey.images)
    return feature_codes(ctx, load_tensors(samples, size, channels, what, ctx.tensor_cache))


def best_code_match(queries: torch.Tensor, refs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query row, the highest similarity to any reference row and that row's index."""
    best = torch.full((len(queries),), -1.0)
    index = torch.zeros(len(queries), dtype=torch.int64)
    for i in range(0, len(queries), CHUNK):
        sim = queries[i : i + CHUNK] @ refs.T
        if sim.shape[1]:
            best[i : i + CHUNK], index[i : i + CHUNK] = sim.max(dim=1)
    return best, index


def code_similarity(codes: torch.Tensor) -> Callable[[np.ndarray], np.ndarray]:
    """Pairwise similarities of the rows ``idx`` of ``codes``."""

    def similar(idx: np.ndarray) -> np.ndarray:
        part = codes[torch.as_tensor(idx, dtype=torch.int64)]
        return (part @ part.T).numpy()

    return similar
