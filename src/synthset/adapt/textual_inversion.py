"""``adapt.method: textual_inversion``: new tokens per class in a pretrained pipeline's text
encoder, learned from that class's real images; UNet, VAE and the rest of the text encoder stay
frozen.

Class ``c`` gets the token ``<folder of c>`` (``num_tokens`` > 1: also ``<…>_1``, ``<…>_2``, as
diffusers names multi-vector tokens), initialised from ``init_word`` (default: the last word of
the class name). Training captions are the prompts stage's prompts of the class with the class
name replaced by the tokens; generation does the same replacement (``generator.class_tokens``).
The artifact holds one ``<folder>.safetensors`` per class in diffusers' format, so
``pipe.load_textual_inversion(file, token=...)`` reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from synthset.adapt.base import AdaptData
from synthset.adapt.pipeline_task import (
    META_FILE,
    PipelineAdapter,
    PipelineTask,
    captioned_latents,
    class_captions,
    write_meta,
)
from synthset.adapt.sd_parts import PipelineParts
from synthset.classes import ClassInfo
from synthset.errors import SynthsetError
from synthset.prompts.base import with_class_token
from synthset.recipe import AdaptSpec, TextualInversionSpec


def class_token(cls: ClassInfo) -> str:
    """The placeholder token of a class (its safe folder name in angle brackets)."""
    return f"<{cls.folder}>"


def token_names(token: str, n: int) -> list[str]:
    """The ``n`` vocabulary entries of a (multi-vector) token, named as diffusers names them."""
    return [token] + [f"{token}_{k}" for k in range(1, n)]


class TextualInversionTask(PipelineTask):
    """Trains only the new tokens' input embeddings (a forward hook puts them in place)."""

    def __init__(self, spec: AdaptSpec, parts: PipelineParts, data: AdaptData) -> None:
        if parts.is_xl:
            raise SynthsetError(
                "adapt.method textual_inversion: SDXL pipelines (two text encoders) are not "
                "supported yet; use method: lora for SDXL"
            )
        self.classes = data.classes
        n = spec.num_tokens
        self.tokens = {c.id: class_token(c) for c in data.classes}
        words = {c.id: " ".join(token_names(self.tokens[c.id], n)) for c in data.classes}
        captions = class_captions(
            data, "textual_inversion", lambda c, p: with_class_token(p, c.name, words[c.id])
        )
        tokenizer, encoder = parts.tokenizers[0], parts.text_encoders[0]
        new = [name for c in data.classes for name in token_names(self.tokens[c.id], n)]
        clash = [t for t in new if t in tokenizer.get_vocab()]
        if clash:
            raise SynthsetError(
                f"adapt: the tokenizer of {spec.base} already has the token {clash[0]!r}; "
                "rename the class or use a fresh base pipeline"
            )
        tokenizer.add_tokens(new)
        ids = tokenizer.convert_tokens_to_ids(new)
        if max(ids) >= encoder.get_input_embeddings().num_embeddings:
            encoder.resize_token_embeddings(len(tokenizer))
        table = encoder.get_input_embeddings()
        init = [self._init_vector(tokenizer, table.weight, c, spec.init_word) for c in self.classes]
        self.learned = torch.nn.Parameter(torch.stack([v for v in init for _ in range(n)]))
        lookup = torch.full((table.num_embeddings,), -1, dtype=torch.long)
        lookup[torch.tensor(ids)] = torch.arange(len(ids))
        self._rows = lookup.to(parts.device)
        table.register_forward_hook(self._put_learned)
        # captions are tokenized only now that the new tokens exist
        train_set = captioned_latents(parts, data.train, captions, "adapt: real train")
        val_set = (
            captioned_latents(parts, data.val, captions, "adapt: real val") if data.val else None
        )
        super().__init__(spec, parts, train_set, val_set)

    @staticmethod
    def _init_vector(
        tokenizer: Any, weight: torch.Tensor, cls: ClassInfo, word: str | None
    ) -> torch.Tensor:
        """The mean input embedding of the init word's tokens."""
        text = word or cls.name.split()[-1]
        ids = tokenizer(text, add_special_tokens=False).input_ids
        if not ids:
            raise SynthsetError(f"adapt.init_word: {text!r} has no tokens; give a plain word")
        return weight[torch.tensor(ids)].detach().mean(0).clone()

    def _put_learned(self, module: Any, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> Any:
        rows = self._rows[inputs[0]]
        mine = (rows >= 0).unsqueeze(-1)
        return torch.where(mine, self.learned[rows.clamp(min=0)].to(out.dtype), out)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.learned]

    def condition(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.parts.encode(self.parts.token_ids(prompts))

    def save(self, out_dir: Path) -> None:
        from safetensors.torch import save_file

        n = self.spec.num_tokens
        files = {}
        for k, cls in enumerate(self.classes):
            rows = self.learned[k * n : (k + 1) * n].detach().cpu().contiguous()
            save_file({self.tokens[cls.id]: rows}, str(out_dir / f"{cls.folder}.safetensors"))
            files[cls.name] = {"file": f"{cls.folder}.safetensors", "token": self.tokens[cls.id]}
        write_meta(out_dir, self.spec, self.classes, num_tokens=n, tokens=files)


class TextualInversionAdapter(PipelineAdapter):
    """Learns class tokens for ``adapt.base``; the generators load them and put them in the
    prompts in place of the class names."""

    task_class = TextualInversionTask

    def generator_inputs(self, out_dir: Path) -> dict[str, Any]:
        meta_file = Path(out_dir) / META_FILE
        if not meta_file.is_file():
            return {}
        tokens = json.loads(meta_file.read_text(encoding="utf-8"))["tokens"]
        return {
            "model": self.spec.base,
            "textual_inversion": [
                TextualInversionSpec(path=str(Path(out_dir) / t["file"]), token=t["token"])
                for t in tokens.values()
            ],
            "class_tokens": {name: t["token"] for name, t in tokens.items()},
        }
