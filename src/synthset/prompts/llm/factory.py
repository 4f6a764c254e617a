"""Build the LLM backend a recipe's ``prompts.llm`` section asks for."""

from __future__ import annotations

from pathlib import Path

from synthset.prompts.llm.base import LLMBackend
from synthset.recipe import LLMSpec


def build_backend(spec: LLMSpec, cache_dir: Path) -> LLMBackend:
    """An ``openai`` (HTTP) or ``transformers`` (local) backend caching answers in ``cache_dir``."""
    if spec.backend == "transformers":
        from synthset.prompts.llm.transformers_local import TransformersBackend

        return TransformersBackend(spec, cache_dir)
    from synthset.prompts.llm.openai_compat import OpenAICompatibleBackend

    return OpenAICompatibleBackend(spec, cache_dir)
