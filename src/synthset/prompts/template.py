"""The template strategy: ``{class}`` and other ``{slot}``s filled from lists, sampled or crossed.

``prompts.templates`` is a list of templates, or ``photo`` for the shipped set
(``data/photo_templates.txt``); without it, ``prompts.template`` is the one template. A slot's
values come from ``prompts.slots``, else from the shipped defaults (``data/slots.yaml``:
background, lighting, viewpoint, style).
"""

from __future__ import annotations

import itertools
import random
import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path

import yaml

from synthset.errors import SynthsetError
from synthset.prompts.base import Candidate, ClassRequest
from synthset.recipe import PromptsSpec

CLASS_SLOT = "class"


def data_file(name: str) -> Path:
    """A file shipped in ``synthset/prompts/data``."""
    return Path(str(files("synthset.prompts") / "data" / name))


def read_lines(path: Path) -> list[str]:
    """Non-empty lines that are not ``#`` comments."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


@cache
def shipped_templates() -> tuple[str, ...]:
    """The shipped ``photo`` template set."""
    return tuple(read_lines(data_file("photo_templates.txt")))


@cache
def shipped_slots() -> dict[str, tuple[str, ...]]:
    """Default values of the shipped slots (background, lighting, viewpoint, style)."""
    raw = yaml.safe_load(data_file("slots.yaml").read_text(encoding="utf-8"))
    return {k: tuple(str(v) for v in vals) for k, vals in raw.items()}


def slot_names(template: str) -> list[str]:
    """The ``{slot}`` names of a template, in order of first appearance (``class`` included)."""
    names: list[str] = []
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise SynthsetError(
            f"prompts.templates: cannot parse template {template!r}: {exc}"
        ) from exc
    for name in fields:
        if not name.isidentifier():
            raise SynthsetError(
                f"prompts.templates: slot {{{name}}} in template {template!r} is not a plain "
                "name; use letters, digits and '_' (e.g. {background})"
            )
        if name not in names:
            names.append(name)
    return names


def with_article(text: str, class_name: str) -> str:
    """Fix ``a`` to ``an`` right before a class name that starts with a vowel."""
    if class_name[:1].lower() not in "aeiou":
        return text
    escaped = re.escape(class_name)
    return re.sub(rf"\b([Aa]) (?={escaped}\b)", lambda m: f"{m.group(1)}n ", text)


@dataclass(frozen=True)
class _Template:
    index: int
    text: str
    slots: tuple[str, ...]  # slot names other than {class}, in order
    values: tuple[tuple[str, ...], ...]  # the values of each slot

    def size(self) -> int:
        n = 1
        for vals in self.values:
            n *= len(vals)
        return n

    def fill(self, class_name: str, choice: Sequence[str]) -> str:
        mapping = dict(zip(self.slots, choice, strict=True))
        mapping[CLASS_SLOT] = class_name
        return with_article(self.text.format_map(mapping), class_name)


class TemplateStrategy:
    """Fills templates with the class name and slot values; ``combine: cross`` walks every
    (template × slot values) combination in a fixed order, ``sample`` draws them with the rng."""

    name = "template"

    def __init__(self, spec: PromptsSpec) -> None:
        self.spec = spec
        self.templates = self._compile(spec)
        # how many combinations one round offers per class in cross mode
        self.window = max(4 * spec.per_class, 64)

    @staticmethod
    def _compile(spec: PromptsSpec) -> list[_Template]:
        if spec.templates == "photo":
            texts = list(shipped_templates())
        elif isinstance(spec.templates, list):
            texts = list(spec.templates)
        else:
            texts = [spec.template]
        defaults = shipped_slots()
        compiled = []
        for i, text in enumerate(texts):
            names = [n for n in slot_names(text) if n != CLASS_SLOT]
            values = []
            for name in names:
                vals = spec.slots.get(name) or defaults.get(name)
                if not vals:
                    raise SynthsetError(
                        f"prompts.slots: template {text!r} uses slot {{{name}}} but no values "
                        f"are given; add prompts.slots.{name}: [value, ...]"
                    )
                values.append(tuple(vals))
            compiled.append(_Template(i, text, tuple(names), tuple(values)))
        return compiled

    def combinations(self) -> Iterator[tuple[_Template, tuple[str, ...]]]:
        """Every (template, slot values) pair: templates in order, then slot values in order."""
        for tpl in self.templates:
            for choice in itertools.product(*tpl.values):
                yield tpl, choice

    def total(self) -> int:
        """The number of distinct (template, slot values) combinations."""
        return sum(t.size() for t in self.templates)

    def propose(
        self, requests: Sequence[ClassRequest], round_index: int, rng: random.Random
    ) -> dict[int, list[Candidate]]:
        """Cross: the next window of combinations each round; sample: random draws."""
        if self.spec.combine == "cross":
            start = round_index * self.window
            window = list(itertools.islice(self.combinations(), start, start + self.window))
        else:
            window = self._sample(requests, rng)
        out: dict[int, list[Candidate]] = {}
        for req in requests:
            done = set(req.accepted)
            cands = []
            for tpl, choice in window:
                text = tpl.fill(req.cls.name, choice)
                if text not in done:
                    cands.append(Candidate(text, f"template:{tpl.index}"))
            out[req.cls.id] = cands
        return out

    def _sample(
        self, requests: Sequence[ClassRequest], rng: random.Random
    ) -> list[tuple[_Template, tuple[str, ...]]]:
        """Distinct random combinations, enough for the neediest class (all of them, shuffled,
        when there are few)."""
        budget = 3 * max((r.need for r in requests), default=0) + 8
        if self.total() <= budget:
            combos = list(self.combinations())
            rng.shuffle(combos)
            return combos
        seen: set[tuple[int, tuple[str, ...]]] = set()
        combos = []
        for _ in range(20 * budget):
            if len(combos) >= budget:
                break
            tpl = rng.choice(self.templates)
            choice = tuple(rng.choice(vals) for vals in tpl.values)
            if (tpl.index, choice) not in seen:
                seen.add((tpl.index, choice))
                combos.append((tpl, choice))
        return combos
