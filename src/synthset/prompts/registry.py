"""Prompt strategies by ``prompts.strategy``, one line each, imported only when used."""

from __future__ import annotations

from pathlib import Path

from synthset.errors import SynthsetError
from synthset.prompts.base import PromptStrategy
from synthset.recipe import PromptsSpec
from synthset.registry import Registry

#: A strategy class takes ``(spec)``, or ``(spec, llm)`` when it sets ``uses_llm = True``.
STRATEGIES: Registry[type[PromptStrategy]] = Registry(
    "prompts.strategy",
    {
        "template": "synthset.prompts.template:TemplateStrategy",
        "fakeit": "synthset.prompts.fakeit:FakeItStrategy",
        "file": "synthset.prompts.file:FileStrategy",
        "synclr": "synthset.prompts.synclr:SynclrStrategy",
        "synthclip": "synthset.prompts.synthclip:SynthclipStrategy",
        "metaprompt": "synthset.prompts.metaprompt:MetapromptStrategy",
    },
)


def build_strategy(spec: PromptsSpec, cache_dir: Path) -> PromptStrategy:
    """The strategy of ``spec.strategy``; one that asks an LLM gets the backend of
    ``spec.llm``, caching answers under ``cache_dir``."""
    strategy = STRATEGIES.load(spec.strategy)
    if not getattr(strategy, "uses_llm", False):
        return strategy(spec)
    from synthset.prompts.llm.factory import build_backend

    if spec.llm is None:
        raise SynthsetError(
            f"prompts.strategy {spec.strategy!r} asks an LLM: add a 'prompts.llm' section"
        )
    return strategy(spec, build_backend(spec.llm, cache_dir))
