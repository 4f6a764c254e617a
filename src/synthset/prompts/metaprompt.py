"""The metaprompt strategy (hierarchical diversity, as in "Just Say the Name").

Stage 1 (once per strategy instance): the LLM writes ``prompts.metaprompts`` (K) diverse scene /
style directions, class-agnostic as in the paper's metaprompts: the request names the dataset's
``prompts.domain`` (if given), never the class list, so renaming or adding one class re-sends only
that class's requests (every answer is cached by request).

Stage 2 (every round): for every class and direction, the LLM writes prompts following that
direction; each request shows the prompts already accepted for the class (the last ``RECENT``)
and asks for different ones. A class's ``need`` is spread over the directions, starting at a
seeded offset.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from synthset.prompts.base import Candidate, ClassRequest, names_class, similarity
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
    recent,
    require_llm,
    split_count,
)
from synthset.recipe import PromptsSpec

log = logging.getLogger(__name__)

FALLBACK_DIRECTION = "a realistic photo in a natural setting"


def directions_message(domain: str | None, k: int) -> str:
    """Stage 1: ask for ``k`` scene/style directions for a photo dataset of ``domain``."""
    return "\n".join(
        [
            f"I am building a photo dataset of {domain or 'everyday subjects'}.",
            f"Write {k} short directions for its photos, each a different scene, setting, "
            "style, lighting or camera choice, e.g. 'a rainy window-side shot in cool tones'.",
            "Keep each under 12 words and do not name any subject.",
        ]
    )


def prompts_message(req: ClassRequest, direction: str, n: int) -> str:
    """Stage 2: ask for ``n`` prompts of ``req``'s class following ``direction``, unlike the
    ones already accepted."""
    lines = [
        concept_line(req),
        f"Direction: {direction}",
        f"Write {n} text-to-image prompts for photos of a {req.cls.name} that follow this "
        "direction, each different from the others and under 30 words.",
        must_name(req, "prompt"),
    ]
    shown = recent(req.accepted)
    if shown:
        lines.append("Already written (write different ones):")
        lines += [f"- {p}" for p in shown]
    return "\n".join(lines)


class MetapromptStrategy:
    """Two-stage hierarchical prompting; stage 1 runs once, stage 2 once per round (batched)."""

    name = "metaprompt"
    uses_llm = True  # built with the recipe's LLM backend

    def __init__(self, spec: PromptsSpec, llm: LLMBackend) -> None:
        self.spec = spec
        self.llm = llm
        self.llm_spec = require_llm(spec)
        self.directions: list[str] | None = None

    def propose(
        self, requests: Sequence[ClassRequest], round_index: int, rng: random.Random
    ) -> dict[int, list[Candidate]]:
        """Stage 1 if not done yet, then one stage-2 request per (class, direction, chunk)."""
        if not requests:
            return {}
        base = rng.getrandbits(31)
        names = [n for r in requests for n in (r.cls.name, *r.synonyms)]
        directions = self.stage1(base, names)
        size = per_request(self.llm_spec)
        jobs = []
        for req in requests:
            offset = derive_seed(base, "offset", req.cls.id) % len(directions)
            for i, count in enumerate(split_count(oversample(req.need), len(directions))):
                d = (offset + i) % len(directions)
                source = f"llm:{self.name}:r{round_index}:m{d}"
                for j, n in enumerate(chunks(count, size)):
                    user = prompts_message(req, directions[d], n)
                    user += "\n" + answer_format(self.llm_spec, n, key="prompts")
                    seed = derive_seed(base, req.cls.id, d, j)
                    request = build_request(self.llm_spec, user, seed, key="prompts")
                    jobs.append(Job(req.cls.id, request, source, _parse_prompts))
        return ask(self.llm, jobs)

    def stage1(self, base: int, names: Sequence[str]) -> list[str]:
        """The K directions, asked for once (kept in memory; the backend caches on disk).
        Directions naming a class (or a synonym: ``names``) are left out: they would steer every
        class's prompts towards that class (the loop drops prompts naming another class)."""
        if self.directions is None:
            k = self.spec.metaprompts
            user = directions_message(self.spec.domain, k) + "\n"
            user += answer_format(self.llm_spec, k, key="directions")
            seed = derive_seed(base, "directions")
            request = build_request(self.llm_spec, user, seed, key="directions")
            answer = self.llm.complete([request])[0]
            found = distinct(parse_list(answer, "directions"), self.spec.near_duplicate)
            named = [d for d in found if names_class(d, names)]
            if named:
                log.info("metaprompt: %d directions name a class, left out: %r", len(named), named)
            found = [d for d in found if d not in named][:k]
            if not found:
                log.warning("metaprompt: the LLM gave no directions; using %r", FALLBACK_DIRECTION)
                found = [FALLBACK_DIRECTION]
            self.directions = found
        return self.directions


def distinct(texts: Sequence[str], threshold: float) -> list[str]:
    """``texts`` without near-duplicates (token similarity ≥ ``threshold``), in order."""
    kept: list[str] = []
    for text in texts:
        if all(similarity(text, k) < threshold for k in kept):
            kept.append(text)
    return kept


def _parse_prompts(answer: str) -> list[str]:
    return parse_list(answer, "prompts")
