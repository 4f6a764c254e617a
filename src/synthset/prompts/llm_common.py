"""What the LLM prompt strategies share: seeds, request building, one batched call per round, and
parsing caption lists out of answers (JSON, numbered or bulleted lines, ``concept => caption``)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError, create_model

from synthset.errors import SynthsetError
from synthset.prompts.base import Candidate, ClassRequest, clean, names_class
from synthset.prompts.llm.base import ChatRequest, LLMBackend, chat
from synthset.recipe import LLMSpec, PromptsSpec

log = logging.getLogger(__name__)

SYSTEM = "You write short, concrete captions for a text-to-image model. Follow the answer format."
OVERSAMPLE = 1.5  # ask for this many times the prompts still needed (the loop filters)
MAX_PER_REQUEST = 25  # captions asked for in one request, at most
TOKENS_PER_CAPTION = 40  # budget used to fit the count to ``llm.max_tokens``
RECENT = 20  # accepted prompts shown to the LLM, at most

_MARKED = re.compile(r"^\s*(?:\d+\s*[.):]|[-*•])\s*")
_LABEL = re.compile(r"^(?:caption|prompt|description|direction)\s*\d*\s*[:.-]\s*", re.IGNORECASE)
_CHATTER = re.compile(
    r"^(?:here (?:are|is)|sure\b|certainly|of course|okay\b|ok\b|sorry|i'm sorry|i am sorry|"
    r"i (?:cannot|can't|can not|am unable|won't)|as an ai|note\b|these captions|let me know)",
    re.IGNORECASE,
)
_JSONISH = re.compile(r'[\[{]\s*(?:["\[{]|$)', re.MULTILINE)  # {" [" [{ [[ or { at line end
_ITEM_KEYS = ("caption", "prompt", "text", "description", "direction")


# ----------------------------------------------------------------------------- requests


def require_llm(spec: PromptsSpec) -> LLMSpec:
    """The recipe's ``prompts.llm`` section; an LLM strategy cannot run without it."""
    if spec.llm is None:
        raise SynthsetError(
            f"prompts.llm: strategy '{spec.strategy}' needs an llm section (backend, model)"
        )
    return spec.llm


def derive_seed(base: int, *parts: object) -> int:
    """A 31-bit seed from ``base`` and ``parts``: the same inputs always give the same seed."""
    data = ":".join(str(p) for p in (base, *parts)).encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "big") & 0x7FFFFFFF


def oversample(need: int) -> int:
    """How many captions to ask for when ``need`` are missing (some will be filtered)."""
    return max(1, math.ceil(OVERSAMPLE * need)) if need > 0 else 0


def per_request(llm: LLMSpec) -> int:
    """Captions per request that fit ``llm.max_tokens`` (1 … ``MAX_PER_REQUEST``)."""
    return max(1, min(MAX_PER_REQUEST, llm.max_tokens // TOKENS_PER_CAPTION))


def split_count(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal non-negative counts (larger ones first)."""
    if parts <= 0:
        return []
    q, r = divmod(max(0, total), parts)
    return [q + (1 if i < r else 0) for i in range(parts)]


def chunks(total: int, size: int) -> list[int]:
    """Request sizes asking for ``total`` captions, none above ``size``, as even as possible."""
    if total <= 0:
        return []
    return split_count(total, math.ceil(total / size))


def structured(llm: LLMSpec) -> bool:
    """Whether requests ask for JSON-schema output (``structured_output`` is not ``off``)."""
    return llm.structured_output != "off"


@functools.cache
def answer_model(key: str = "captions") -> type[BaseModel]:
    """The pydantic model of a structured answer ``{key: [string, ...]}``."""
    return create_model(key, **{key: (list[str], ...)})


def list_schema(key: str = "captions") -> dict[str, Any]:
    """The JSON schema of ``{key: [string, ...]}`` (from :func:`answer_model`)."""
    return answer_model(key).model_json_schema()


def answer_format(llm: LLMSpec, n: int, key: str = "captions", line: str | None = None) -> str:
    """The closing instruction: a JSON object, or ``n`` numbered lines (``line`` shows one)."""
    if structured(llm):
        return f'Answer only with JSON: {{"{key}": [{n} strings]}}.'
    shape = f" of the form: {line}" if line else ""
    return f"Answer with {n} numbered lines{shape}. Nothing else."


def build_request(llm: LLMSpec, user: str, seed: int, key: str = "captions") -> ChatRequest:
    """A chat request with the recipe's sampling parameters, ``seed`` and (unless structured
    output is off) the JSON schema of ``{key: [...]}``."""
    return chat(
        SYSTEM,
        user,
        temperature=llm.temperature,
        max_tokens=llm.max_tokens,
        seed=seed,
        json_schema=list_schema(key) if structured(llm) else None,
    )


def concept_line(req: ClassRequest) -> str:
    """``Concept: <name> (<description>; also called …)`` for one class."""
    notes = [d for d in [(req.description or "").strip()] if d]
    if req.synonyms:
        notes.append("also called " + ", ".join(req.synonyms))
    return f"Concept: {req.cls.name}" + (f" ({'; '.join(notes)})" if notes else "")


def must_name(req: ClassRequest, item: str = "caption") -> str:
    """The instruction that every caption names the class (or one of its synonyms)."""
    alts = "".join(f' or "{s}"' for s in req.synonyms)
    return f'Every {item} must contain the words "{req.cls.name}"{alts}.'


def recent(accepted: Sequence[str], n: int = RECENT) -> list[str]:
    """The last ``n`` accepted prompts (what a request shows to be avoided)."""
    return list(accepted[-n:]) if n > 0 else []


# ----------------------------------------------------------------------------- one call per round


@dataclass(frozen=True)
class Job:
    """One request of a round: whose captions it asks for, how its answer is read, its source."""

    class_id: int
    request: ChatRequest
    source: str
    parse: Callable[[str], list[str]]


def ask(llm: LLMBackend, jobs: Sequence[Job]) -> dict[int, list[Candidate]]:
    """Send every job's request in ONE ``llm.complete`` call; candidates by class id, taken
    round-robin over the class's jobs so no single request crowds out the others. An answer that
    is broken JSON gives no candidates, only a ``malformed`` marker (first) that the loop counts."""
    if not jobs:
        return {}
    answers = llm.complete([j.request for j in jobs])
    per_class: dict[int, list[list[Candidate]]] = {}
    broken: dict[int, list[Candidate]] = {}
    for job, answer in zip(jobs, answers, strict=True):
        if broken_json(answer):
            log.info("LLM answer is malformed JSON (%s): %r", job.source, answer[:120])
            broken.setdefault(job.class_id, []).append(Candidate("", job.source, malformed=True))
            per_class.setdefault(job.class_id, [])
            continue
        texts = job.parse(answer)
        if not texts:
            log.info("LLM answer with no usable captions (%s): %r", job.source, answer[:120])
        per_class.setdefault(job.class_id, []).append([Candidate(t, job.source) for t in texts])
    return {cid: broken.get(cid, []) + interleave(lists) for cid, lists in per_class.items()}


def interleave(lists: Sequence[Sequence[Candidate]]) -> list[Candidate]:
    """First items of every list, then second items, …"""
    out: list[Candidate] = []
    for i in range(max((len(x) for x in lists), default=0)):
        out.extend(x[i] for x in lists if i < len(x))
    return out


# ----------------------------------------------------------------------------- parsing


def parse_list(text: str, key: str = "captions") -> list[str]:
    """The items of an answer: ``{key: [...]}`` (or any JSON list) when the answer is JSON, else
    its numbered/bulleted lines (all lines when none is marked), without chatter and headers.
    A JSON-looking answer that does not parse (:func:`broken_json`) gives nothing: its pieces are
    never read as lines."""
    data = load_json(text)
    if data is None and broken_json(text):
        return []
    if isinstance(data, dict):
        try:  # the structured answer we asked for, validated with its pydantic model
            return [
                c.strip() for c in getattr(answer_model(key).model_validate(data), key) if c.strip()
            ]
        except ValidationError:
            pass  # a near miss: take what the lenient reading below can use
    if data is not None:
        return [s for s in (_item_text(x) for x in _json_items(data, key)) if s]
    return parse_lines(text)


def parse_lines(text: str) -> list[str]:
    """Captions from plain lines: marked lines (``1.``, ``2)``, ``-``, ``*``) when there are any,
    else every line; headers (``…:``), code fences and chatter (``Sure! …``) are skipped."""
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("```")]
    marked = [ln for ln in lines if _MARKED.match(ln)]
    out = []
    for line in marked or lines:
        item = _tidy(line)
        if item and not item.endswith(":") and not _CHATTER.match(item):
            out.append(item)
    return out


def broken_json(text: str) -> bool:
    """True when ``text`` looks like JSON (a ``{``/``[`` opens a string, object or list, or ends a
    line) but no JSON value can be read from it (``[1] a canoe`` is not JSON-looking)."""
    return bool(_JSONISH.search(text)) and load_json(text) is None


def load_json(text: str) -> Any | None:
    """The JSON value of ``text``: itself, a fenced block, or its outermost ``{…}``/``[…]``."""
    stripped = text.strip()
    candidates = [stripped]
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        candidates.append(fenced.group(1).strip())
    for open_, close in ("{}", "[]"):
        start, end = text.find(open_), text.rfind(close)
        if 0 <= start < end:
            candidates.append(text[start : end + 1])
    for candidate in candidates:
        if not candidate or candidate[0] not in "[{":
            continue
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


def split_pair(item: str, names: Sequence[str]) -> str | None:
    """The caption of ``concept => caption`` (or ``caption => concept``: the longer side is the
    caption); None when the concept side names none of ``names`` (an echoed example)."""
    if "=>" not in item:
        return item
    left, right = (s.strip() for s in item.split("=>", 1))
    concept, caption = (left, right) if len(right) >= len(left) else (right, left)
    if not caption or (concept and not names_class(concept, names)):
        return None
    return _tidy(caption) or None


def _json_items(data: Any, key: str) -> list[Any]:
    """The list under ``key`` (or the first list value), or ``data`` itself when a list."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        if isinstance(data.get(key), list):
            return data[key]
        for value in data.values():
            if isinstance(value, list):
                return value
    return []


def _item_text(item: Any) -> str:
    """A caption from a JSON item: a string, ``{"caption": …}``, or ``[caption, labels]``."""
    if isinstance(item, dict):
        item = next((item[k] for k in _ITEM_KEYS if isinstance(item.get(k), str)), "")
    elif isinstance(item, list):
        item = next((x for x in item if isinstance(x, str)), "")
    return _tidy(item) if isinstance(item, str) else ""


def _tidy(line: str) -> str:
    """One caption: no numbering, bullet, ``Caption:`` label, markdown emphasis or quotes."""
    text = clean(_MARKED.sub("", " ".join(line.split()), count=1))
    text = _LABEL.sub("", text).strip().strip("*_").strip()
    return clean(text)
