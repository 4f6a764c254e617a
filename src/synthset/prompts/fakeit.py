"""The fake-it strategy (no LLM): ``"<class>, <description>, <scene>"`` prompts.

As in "Fake it till you make it" and name-only continual-learning papers: the class name, its
description or hypernym (``classes.descriptions``; left out when there is none) and a scene from a
shipped list of scene categories (``data/scenes.txt``, or ``prompts.slots.scene``), with an
optional photo-style prefix.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import cache

from synthset.prompts.base import Candidate, ClassRequest
from synthset.prompts.template import data_file, read_lines, with_article
from synthset.recipe import PromptsSpec

PREFIXES: tuple[str, ...] = (
    "",
    "a photo of a ",
    "a realistic photo of a ",
    "a close-up photo of a ",
    "a wide shot of a ",
)


@cache
def shipped_scenes() -> tuple[str, ...]:
    """The shipped scene phrases ("in a kitchen", "on a beach", …)."""
    return tuple(read_lines(data_file("scenes.txt")))


def fakeit_prompt(class_name: str, description: str | None, scene: str, prefix: str = "") -> str:
    """``"<prefix><class>, <description>, <scene>"`` (the description left out when empty)."""
    parts = [with_article(f"{prefix}{class_name}", class_name)]
    if description and description.strip():
        parts.append(description.strip())
    parts.append(scene)
    return ", ".join(parts)


class FakeItStrategy:
    """Class name + description + a scene drawn with the rng; deterministic under the seed."""

    name = "fakeit"

    def __init__(self, spec: PromptsSpec) -> None:
        self.spec = spec
        self.scenes = tuple(spec.slots.get("scene") or shipped_scenes())

    def propose(
        self, requests: Sequence[ClassRequest], round_index: int, rng: random.Random
    ) -> dict[int, list[Candidate]]:
        """About three candidates per needed prompt, distinct (scene, prefix) pairs per class."""
        pairs = [(s, p) for s in range(len(self.scenes)) for p in range(len(PREFIXES))]
        out: dict[int, list[Candidate]] = {}
        for req in requests:
            done = set(req.accepted)
            k = min(len(pairs), 3 * req.need + 4)
            cands = []
            for s, p in rng.sample(pairs, k):
                text = fakeit_prompt(req.cls.name, req.description, self.scenes[s], PREFIXES[p])
                if text not in done:
                    cands.append(Candidate(text, f"fakeit:scene{s}"))
            out[req.cls.id] = cands
        return out
