"""Text embeddings given instead of prompts (``generate.generator.prompt_embeds``).

A ``.safetensors`` file holds one tensor ``[tokens, dim]`` per class name — what diffusion
inversion or a class encoder learns — and, for pipelines with a pooled text embedding (SDXL,
SD3, Flux), ``<class>.pooled`` ``[dim]``. Each item is conditioned on its class's tensors; the
pipeline still encodes the negative prompt itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthset.errors import SynthsetError
from synthset.store.conditioning import POOLED, UNCONDITIONAL

if TYPE_CHECKING:
    import torch

    from synthset.plan import WorkItem

_FIELD = "generate.generator.prompt_embeds"


class PromptEmbeddings:
    """Per-class prompt embeddings read from a safetensors file."""

    def __init__(self, path: Path) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path).expanduser()
        if not path.is_file():
            raise SynthsetError(f"{_FIELD}: no such file {str(path)!r}; give a .safetensors file")
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise SynthsetError(
                f"{_FIELD}: {str(path)!r} is not a safetensors file ({exc}); save one with "
                "safetensors.torch.save_file({class_name: tensor})"
            ) from None
        self.path = path
        self.tokens = {k: v for k, v in tensors.items() if not k.endswith(POOLED)}
        self.pooled = {k[: -len(POOLED)]: v for k, v in tensors.items() if k.endswith(POOLED)}
        bad = [k for k, v in self.tokens.items() if v.ndim != 2]
        if bad:
            raise SynthsetError(
                f"{_FIELD}: tensor {bad[0]!r} has shape {tuple(self.tokens[bad[0]].shape)}; "
                "each class needs [tokens, dim]"
            )

    @property
    def has_unconditional(self) -> bool:
        """Whether the file brings the classifier-free guidance input."""
        return UNCONDITIONAL in self.tokens

    def _lookup(self, table: dict[str, torch.Tensor], key: str, what: str) -> torch.Tensor:
        if key not in table:
            known = ", ".join(sorted(table)[:5]) or "none"
            raise SynthsetError(
                f"{_FIELD}: {self.path.name} has no {what} for class {key!r} (it has: {known}); "
                "add it or re-export the embeddings"
            )
        return table[key]

    def kwargs(
        self, items: Sequence[WorkItem], device: torch.device, dtype: torch.dtype
    ) -> dict[str, Any]:
        """``prompt_embeds`` (and ``pooled_prompt_embeds`` when the file has them) for a batch."""
        import torch

        def stacked(table: dict[str, torch.Tensor], what: str) -> torch.Tensor:
            rows = [self._lookup(table, it.class_name, what) for it in items]
            return torch.stack(rows).to(device, dtype)

        out: dict[str, Any] = {"prompt_embeds": stacked(self.tokens, "embedding")}
        if self.pooled:
            out["pooled_prompt_embeds"] = stacked(self.pooled, "pooled embedding")
        if UNCONDITIONAL in self.tokens:
            n = len(items)
            out["negative_prompt_embeds"] = (
                self.tokens[UNCONDITIONAL].to(device, dtype).unsqueeze(0).expand(n, -1, -1)
            )
            if UNCONDITIONAL in self.pooled:
                out["negative_pooled_prompt_embeds"] = (
                    self.pooled[UNCONDITIONAL].to(device, dtype).unsqueeze(0).expand(n, -1)
                )
        return out
