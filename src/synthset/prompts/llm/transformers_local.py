"""The local backend: any transformers causal LM (hub id or folder), batched generation.

Sampling is done per request with its own ``torch.Generator`` seeded from ``request.seed``
(a logits processor draws each row's token, ``generate`` then only keeps it), so an answer
depends on its request only — not on the other requests of its batch, nor on which ones were
already cached. ``temperature == 0`` is greedy decoding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synthset.devices import resolve_device, resolve_dtype
from synthset.errors import SynthsetError
from synthset.prompts.llm.base import ChatRequest
from synthset.prompts.llm.cache import CACHE_FILENAME, ResponseCache
from synthset.recipe import LLMSpec


class TransformersBackend:
    """``complete(requests)`` with a local ``AutoModelForCausalLM``; the model loads on the first
    request the cache cannot answer."""

    def __init__(self, spec: LLMSpec, cache_dir: Path) -> None:
        self.spec = spec
        self.name = f"transformers:{spec.model}"
        self.cache = ResponseCache(Path(cache_dir) / CACHE_FILENAME)
        self._model: Any = None
        self._tokenizer: Any = None

    def complete(self, requests: Sequence[ChatRequest]) -> list[str]:
        """One answer per request, in order; cached answers first, the rest in batches of
        ``spec.batch_size`` (grouped by ``max_tokens``), each cached as soon as its batch ends."""
        keys = [r.cache_key(self.name) for r in requests]
        answers: dict[str, str] = {}
        todo: dict[str, ChatRequest] = {}
        for key, req in zip(keys, requests, strict=True):
            cached = answers.get(key) or self.cache.get(key)
            if cached is not None:
                answers[key] = cached
            else:
                todo.setdefault(key, req)
        for batch in _batches(list(todo.items()), self.spec.batch_size):
            texts = self._generate([req for _, req in batch])
            for (key, _), text in zip(batch, texts, strict=True):
                self.cache.put(key, text)
                answers[key] = text
        return [answers[k] for k in keys]

    def load(self) -> None:
        """Load the tokenizer and model (once); a missing or offline model → SynthsetError."""
        if self._model is not None:
            return
        import transformers
        from packaging.version import Version

        device = resolve_device(self.spec.device)
        dtype = resolve_dtype(self.spec.dtype, device)
        dtype_kw = (
            "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
        )
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(self.spec.model)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                self.spec.model, **{dtype_kw: dtype}
            )
        except (OSError, ValueError, KeyError) as err:
            raise SynthsetError(self._load_error(err)) from None
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._tokenizer, self._model = tokenizer, model.to(device).eval()

    def _load_error(self, err: Exception) -> str:
        first = " ".join(str(err).split())[:200]
        offline = " (HF_HUB_OFFLINE is set: only downloaded models load)" if _offline() else ""
        return (
            f"prompts.llm.model: cannot load {self.spec.model!r} with transformers{offline}: "
            f"{first}; give a folder saved with save_pretrained or a downloaded hub id"
        )

    def _generate(self, requests: Sequence[ChatRequest]) -> list[str]:
        """Answer one batch (all with the same ``max_tokens``): decode only the new tokens."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        self.load()
        tok, model = self._tokenizer, self._model
        prompts = [self._prompt_text(r) for r in requests]
        inputs = tok(
            prompts,
            return_tensors="pt",
            return_token_type_ids=False,  # generate() rejects them (transformers 4.x)
            padding=True,
            add_special_tokens=not tok.chat_template,
        ).to(model.device)
        config = GenerationConfig(
            max_new_tokens=requests[0].max_tokens,
            do_sample=False,  # sampling happens per row in _PerRowSampler
            eos_token_id=model.generation_config.eos_token_id or tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        sampler = _PerRowSampler(requests)
        with torch.inference_mode():
            out = model.generate(
                **inputs, generation_config=config, logits_processor=LogitsProcessorList([sampler])
            )
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return [t.strip() for t in tok.batch_decode(new_tokens, skip_special_tokens=True)]

    def _prompt_text(self, req: ChatRequest) -> str:
        """The chat template's rendering when the tokenizer has one, else the plain messages."""
        if self._tokenizer.chat_template:
            messages = [{"role": role, "content": content} for role, content in req.messages]
            return self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        return "\n\n".join(content for _, content in req.messages) + "\n"


class _PerRowSampler:
    """A logits processor that picks each row's next token with that row's own seeded
    generator and temperature (0 → argmax), returning logits that force the pick."""

    def __init__(self, requests: Sequence[ChatRequest]) -> None:
        import torch

        self.temperatures = [r.temperature for r in requests]
        self.generators = [torch.Generator().manual_seed(r.seed) for r in requests]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        picks = []
        for row, (temp, gen) in enumerate(zip(self.temperatures, self.generators, strict=True)):
            logits = scores[row].float().cpu()
            if temp <= 0:
                picks.append(int(logits.argmax()))
            else:
                probs = torch.softmax(logits / temp, dim=-1)
                picks.append(int(torch.multinomial(probs, 1, generator=gen)))
        forced = torch.full_like(scores, float("-inf"))
        index = torch.tensor(picks, device=scores.device).unsqueeze(1)
        return forced.scatter_(1, index, 0.0)


def _batches(
    items: list[tuple[str, ChatRequest]], size: int
) -> list[list[tuple[str, ChatRequest]]]:
    """Chunks of at most ``size`` items sharing one ``max_tokens``, in first-seen order."""
    groups: dict[int, list[tuple[str, ChatRequest]]] = {}
    for item in items:
        groups.setdefault(item[1].max_tokens, []).append(item)
    return [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
