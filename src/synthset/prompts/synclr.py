"""The synclr strategy (SynCLR-style): few-shot ``concept => caption`` prompting.

Each request shows three in-context examples (drawn with the seeded rng from
``data/synclr_examples.yaml``) that put a concept in a background or context with a style, lighting
or texture, then asks for captions of one class, each in a different background. Lines whose
concept side names another concept (echoed examples) and copies of the examples are discarded.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, partial

import yaml

from synthset.errors import SynthsetError
from synthset.prompts.base import Candidate, ClassRequest, normalize
from synthset.prompts.llm.base import LLMBackend
from synthset.prompts.llm_common import (
    Job,
    answer_format,
    ask,
    build_request,
    chunks,
    concept_line,
    derive_seed,
    must_name,
    oversample,
    parse_list,
    per_request,
    require_llm,
    split_pair,
    structured,
)
from synthset.prompts.template import data_file
from synthset.recipe import PromptsSpec

SHOTS = 3
INTRO = (
    "Write image captions for a concept. Each caption puts the concept in a different background "
    "or context and may add a style, lighting or texture."
)


@dataclass(frozen=True)
class Example:
    """One in-context example: ``concept => caption``."""

    concept: str
    caption: str


@cache
def shipped_examples() -> tuple[Example, ...]:
    """The shipped in-context examples (``data/synclr_examples.yaml``)."""
    raw = yaml.safe_load(data_file("synclr_examples.yaml").read_text(encoding="utf-8"))
    return tuple(Example(str(e["concept"]), str(e["caption"])) for e in raw)


def synclr_message(req: ClassRequest, n: int, shots: Sequence[Example], json_answer: bool) -> str:
    """The user message asking for ``n`` captions of ``req``'s class after ``shots``."""
    name = req.cls.name
    lines = [INTRO, "", "Examples:"]
    lines += [f"{e.concept} => {e.caption}" for e in shots]
    lines += ["", concept_line(req)]
    lines.append(f"Write {n} new captions for {name}, each in a different background.")
    lines.append(must_name(req))
    if json_answer:
        lines.append("Give only the caption text in each string.")
    return "\n".join(lines)


class SynclrStrategy:
    """Few-shot ``concept => caption`` captions; one batched LLM call per round."""

    name = "synclr"
    uses_llm = True  # built with the recipe's LLM backend

    def __init__(
        self, spec: PromptsSpec, llm: LLMBackend, examples: Sequence[Example] | None = None
    ) -> None:
        self.spec = spec
        self.llm = llm
        self.llm_spec = require_llm(spec)
        self.examples = tuple(examples) if examples is not None else shipped_examples()
        if len(self.examples) < SHOTS:
            raise SynthsetError(f"synclr needs at least {SHOTS} in-context examples")

    def propose(
        self, requests: Sequence[ClassRequest], round_index: int, rng: random.Random
    ) -> dict[int, list[Candidate]]:
        """About 1.5× ``need`` captions per class, in requests of at most ``per_request``."""
        base = rng.getrandbits(31)
        source = f"llm:{self.name}:r{round_index}"
        jobs = []
        for req in requests:
            class_rng = random.Random(derive_seed(base, "class", req.cls.id))
            names = [req.cls.name, *req.synonyms]
            for i, n in enumerate(chunks(oversample(req.need), per_request(self.llm_spec))):
                shots = self._shots(req, class_rng)
                user = synclr_message(req, n, shots, structured(self.llm_spec))
                user += "\n" + answer_format(self.llm_spec, n, line=f"{req.cls.name} => caption")
                seed = derive_seed(base, req.cls.id, i)
                parse = partial(_parse, names=tuple(names), shots=tuple(shots))
                jobs.append(
                    Job(req.cls.id, build_request(self.llm_spec, user, seed), source, parse)
                )
        return ask(self.llm, jobs)

    def _shots(self, req: ClassRequest, rng: random.Random) -> list[Example]:
        """``SHOTS`` examples, not of the class itself when others are available."""
        own = normalize(req.cls.name)
        pool = [e for e in self.examples if normalize(e.concept) != own]
        return rng.sample(pool if len(pool) >= SHOTS else list(self.examples), SHOTS)


def _parse(answer: str, names: tuple[str, ...], shots: tuple[Example, ...]) -> list[str]:
    """Captions of the class from an answer; echoed examples and other concepts dropped."""
    copies = {normalize(e.caption) for e in shots}
    out = []
    for item in parse_list(answer):
        caption = split_pair(item, names)
        if caption and normalize(caption) not in copies:
            out.append(caption)
    return out
