"""The synthclip strategy (SynthCLIP-style): the LLM writes generic, varied scene captions that
mention the concept — free scenes, no background list, no in-context examples."""

from __future__ import annotations

import random
from collections.abc import Sequence

from synthset.prompts.base import Candidate, ClassRequest
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
)
from synthset.recipe import PromptsSpec


def synthclip_message(req: ClassRequest, n: int) -> str:
    """The user message asking for ``n`` free scene captions of ``req``'s class."""
    return "\n".join(
        [
            concept_line(req),
            f"Write {n} captions of realistic, everyday photos in which a {req.cls.name} appears. "
            "Vary the scene freely: indoors or outdoors, other people, animals or objects, time "
            "of day, weather, camera angle.",
            f"{must_name(req)} Keep each caption under 30 words.",
        ]
    )


class SynthclipStrategy:
    """Generic scene captions mentioning the class; one batched LLM call per round."""

    name = "synthclip"
    uses_llm = True  # built with the recipe's LLM backend

    def __init__(self, spec: PromptsSpec, llm: LLMBackend) -> None:
        self.spec = spec
        self.llm = llm
        self.llm_spec = require_llm(spec)

    def propose(
        self, requests: Sequence[ClassRequest], round_index: int, rng: random.Random
    ) -> dict[int, list[Candidate]]:
        """About 1.5× ``need`` captions per class, in requests of at most ``per_request``."""
        base = rng.getrandbits(31)
        source = f"llm:{self.name}:r{round_index}"
        jobs = []
        for req in requests:
            for i, n in enumerate(chunks(oversample(req.need), per_request(self.llm_spec))):
                user = synthclip_message(req, n) + "\n" + answer_format(self.llm_spec, n)
                seed = derive_seed(base, req.cls.id, i)
                jobs.append(
                    Job(req.cls.id, build_request(self.llm_spec, user, seed), source, parse_list)
                )
        return ask(self.llm, jobs)
