"""Sampling from diffusion inversion's learned conditionings (``generate.generator.kind:
inversion``), as "Training on Thin Air" does.

Each work item names its source image's row and a partner row of the same class (the plan
draws them, see :func:`synthset.plan.build_plan`). Its conditioning is
``e = e_src + λ (e_partner − e_src) + emb_noise · n`` with ``n`` Gaussian noise drawn from the
item's own seed, fed to the pipeline as ``prompt_embeds``; classifier-free guidance uses the mean
of all learned conditionings as the unconditional input (the paper's choice).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthset.errors import SynthsetError
from synthset.generators.text2image import Text2ImageGenerator
from synthset.store.conditioning import EMBEDDINGS_FILE, read_inversion_index

if TYPE_CHECKING:
    import torch

    from synthset.plan import WorkItem
    from synthset.recipe import GeneratorSpec

_FIELD = "generate.generator.inversion_dir"
#: Offset between an item's seed and the seed of its conditioning noise (never the same stream).
NOISE_SEED_OFFSET = 0x5EED


class InversionGenerator(Text2ImageGenerator):
    """Text-to-image pipeline conditioned on learned per-image contexts instead of prompts."""

    mode = "inversion"

    def __init__(self, spec: GeneratorSpec, root: Path | None = None) -> None:
        from safetensors.torch import load_file

        super().__init__(spec, root)
        if "prompt_embeds" not in self._call_params:
            raise SynthsetError(
                f"{_FIELD}: {type(self.pipe).__name__} takes no prompt_embeds; use an SD 1.x/2.x "
                "or SDXL model"
            )
        self.rows = read_inversion_index(spec.inversion_dir)
        tensors = load_file(str(Path(spec.inversion_dir or "") / EMBEDDINGS_FILE))
        self.table = tensors["embeddings"].to(self.device, self.dtype)
        self.pooled = tensors.get("pooled")
        if self.pooled is not None:
            self.pooled = self.pooled.to(self.device, self.dtype)
        if len(self.table) != len(self.rows):
            raise SynthsetError(
                f"{_FIELD}: {len(self.table)} embeddings but {len(self.rows)} index rows; "
                "rerun 'synthset adapt'"
            )

    def conditioning(self, item: WorkItem) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The item's context (and pooled vector): interpolated towards its partner, noised."""
        import torch

        src, partner = int(item.params["source_row"]), int(item.params["partner_row"])
        lam = float(item.params.get("lambda", 0.0))
        e = self.table[src] + lam * (self.table[partner] - self.table[src])
        pooled = None
        if self.pooled is not None:
            pooled = self.pooled[src] + lam * (self.pooled[partner] - self.pooled[src])
        if self.spec.emb_noise > 0:
            gen = torch.Generator().manual_seed((item.seed + NOISE_SEED_OFFSET) % (1 << 63))
            noise = torch.randn(e.shape, generator=gen).to(e.device, e.dtype)
            e = e + self.spec.emb_noise * noise
        return e, pooled

    def call_kwargs(self, items: Sequence[WorkItem], **more: Any) -> dict[str, Any]:
        import torch

        kwargs = super().call_kwargs(items, **more)
        kwargs.pop("prompt", None)
        kwargs.pop("negative_prompt", None)
        conds = [self.conditioning(it) for it in items]
        n = len(items)
        kwargs["prompt_embeds"] = torch.stack([e for e, _ in conds])
        kwargs["negative_prompt_embeds"] = self.table.mean(0, keepdim=True).expand(n, -1, -1)
        if self.pooled is not None:
            kwargs["pooled_prompt_embeds"] = torch.stack([p for _, p in conds])  # type: ignore[misc]
            kwargs["negative_pooled_prompt_embeds"] = self.pooled.mean(0, keepdim=True).expand(
                n, -1
            )
        return {k: v for k, v in kwargs.items() if k in self._call_params}
