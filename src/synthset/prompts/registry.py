"""Pick the prompt strategy a recipe names (strategies are imported only when used)."""

from __future__ import annotations

from pathlib import Path

from synthset.prompts.base import PromptStrategy
from synthset.recipe import PromptsSpec


def build_strategy(spec: PromptsSpec, cache_dir: Path) -> PromptStrategy:
    """The strategy of ``spec.strategy``; LLM strategies get a backend caching under
    ``cache_dir``."""
    if spec.strategy == "template":
        from synthset.prompts.template import TemplateStrategy

        return TemplateStrategy(spec)
    if spec.strategy == "fakeit":
        from synthset.prompts.fakeit import FakeItStrategy

        return FakeItStrategy(spec)
    if spec.strategy == "file":
        from synthset.prompts.file import FileStrategy

        return FileStrategy(spec)
    from synthset.prompts.llm.factory import build_backend

    assert spec.llm is not None  # the recipe validator guarantees it
    llm = build_backend(spec.llm, cache_dir)
    if spec.strategy == "synclr":
        from synthset.prompts.synclr import SynclrStrategy

        return SynclrStrategy(spec, llm)
    if spec.strategy == "synthclip":
        from synthset.prompts.synthclip import SynthclipStrategy

        return SynthclipStrategy(spec, llm)
    from synthset.prompts.metaprompt import MetapromptStrategy

    return MetapromptStrategy(spec, llm)
