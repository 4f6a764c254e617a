"""LLM backends by ``prompts.llm.backend``, one line each, imported only when used."""

from __future__ import annotations

from pathlib import Path

from synthset.prompts.llm.base import LLMBackend
from synthset.recipe import LLMSpec
from synthset.registry import Registry

#: A backend class takes ``(spec, cache_dir)`` and caches its answers there.
BACKENDS: Registry[type[LLMBackend]] = Registry(
    "prompts.llm.backend",
    {
        "openai": "synthset.prompts.llm.openai_compat:OpenAICompatibleBackend",
        "transformers": "synthset.prompts.llm.transformers_local:TransformersBackend",
    },
)


def build_backend(spec: LLMSpec, cache_dir: Path) -> LLMBackend:
    """The backend of ``spec.backend`` caching answers in ``cache_dir``."""
    return BACKENDS.load(spec.backend)(spec, cache_dir)
