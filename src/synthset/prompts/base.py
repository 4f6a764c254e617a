"""What every prompt strategy shares: the record format, the strategy protocol, and the loop that
asks a strategy for candidates and keeps only labeled, non-duplicate prompts until each class has
``per_class`` of them."""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from synthset.classes import ClassInfo
from synthset.errors import SynthsetError
from synthset.recipe import PromptsSpec
from synthset.store.atomic import read_jsonl, write_jsonl

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class PromptRecord:
    """One accepted prompt: the row format of ``prompts.jsonl``."""

    class_id: int
    class_name: str
    prompt: str
    strategy: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Candidate:
    """A prompt a strategy proposes for a class, with where it came from. ``malformed`` marks an
    answer that could not be read (e.g. broken JSON): no prompt, only counted by the loop."""

    prompt: str
    source: str
    malformed: bool = False


@dataclass
class ClassRequest:
    """What the loop asks of a strategy for one class in one round."""

    cls: ClassInfo
    need: int
    accepted: list[str]
    synonyms: list[str] = field(default_factory=list)
    description: str | None = None


class PromptStrategy(Protocol):
    """Proposes candidate prompts; the loop filters them. ``rng`` is seeded from the recipe seed
    and the round, so a strategy that draws from it is deterministic."""

    name: str

    def propose(
        self, requests: Sequence[ClassRequest], round_index: int, rng: random.Random
    ) -> dict[int, list[Candidate]]:
        """Candidates by class id (more than ``need`` is fine; fewer ends the loop early)."""
        ...


@dataclass
class ClassStats:
    """How one class's prompts were obtained."""

    proposed: int = 0
    accepted: int = 0
    repaired: int = 0
    dropped_unlabeled: int = 0
    dropped_other_class: int = 0  # named a different class of the recipe (never repaired)
    duplicates: int = 0
    malformed_answers: int = 0  # answers that could not be read (no candidates from them)


def save_prompts(path: Path, records: Sequence[PromptRecord]) -> None:
    """Write ``prompts.jsonl`` atomically."""
    write_jsonl(path, [r.to_dict() for r in records])


def load_prompts(path: Path) -> list[PromptRecord]:
    """Read ``prompts.jsonl``."""
    if not path.exists():
        raise SynthsetError(f"no prompts at {path}: run 'synthset prompts' first")
    return [PromptRecord(**row) for row in read_jsonl(path)]


# ----------------------------------------------------------------------------- text checks


def normalize(text: str) -> str:
    """Lower-case words only: the form used to compare prompts."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_WORD.findall(text))


def tokens(text: str) -> frozenset[str]:
    return frozenset(normalize(text).split())


def similarity(a: str, b: str) -> float:
    """Token-set Jaccard similarity of two prompts (1.0 = same words)."""
    ta, tb = tokens(a), tokens(b)
    if not ta and not tb:
        return 1.0
    return len(ta & tb) / len(ta | tb)


def _fits(words: Sequence[str], parts: Sequence[str]) -> bool:
    """``words`` are the name ``parts`` (its last word may end in ``s``/``es``)."""
    last = parts[-1]
    return list(words[:-1]) == list(parts[:-1]) and words[-1] in (last, last + "s", last + "es")


def _spans(words: Sequence[str], name: str) -> list[range]:
    """Where ``name`` occurs in ``words`` as whole words (plural ``s``/``es`` too)."""
    parts = normalize(name).split()
    k = len(parts)
    return [
        range(i, i + k) for i in range(len(words) - k + 1) if k and _fits(words[i : i + k], parts)
    ]


def with_class_token(prompt: str, name: str, token: str) -> str:
    """``prompt`` with whole-word mentions of the class ``name`` (any case) replaced by
    ``token`` — a learned placeholder such as ``<cat>``; appended when the prompt does not name
    the class (it may use a synonym)."""
    pattern = re.compile(rf"(?<![\w<]){re.escape(name)}(?![\w>])", re.IGNORECASE)
    new, count = pattern.subn(lambda _: token, prompt)
    return new if count else f"{prompt}, {token}"


def names_class(prompt: str, names: Sequence[str]) -> bool:
    """True when the prompt contains one of ``names`` as whole words (plural ``s``/``es`` too)."""
    words = normalize(prompt).split()
    return any(_spans(words, name) for name in names)


class ClassNames:
    """The names (and synonyms) of every class, indexed by first word, to find which classes a
    caption names: whole words as :func:`names_class` matches them, longest name first, each match
    claiming its words (the caption's own class winning ties), so for classes "red fox" and "fox"
    the caption "a red fox" names "red fox" only, and "cat" is never found in "wildcat"."""

    def __init__(self, names: dict[int, Sequence[str]]) -> None:
        self._first: dict[str, list[tuple[tuple[str, ...], int]]] = {}
        for cid, alts in names.items():
            for name in alts:
                parts = tuple(normalize(name).split())
                if parts:
                    self._first.setdefault(parts[0], []).append((parts, cid))

    def _matches(self, words: Sequence[str]) -> list[tuple[range, int]]:
        out = []
        for i, w in enumerate(words):
            keys = {w, w[:-1] if w.endswith("s") else w, w[:-2] if w.endswith("es") else w}
            for key in keys:
                for parts, cid in self._first.get(key, []):
                    k = len(parts)
                    if i + k <= len(words) and _fits(words[i : i + k], parts):
                        out.append((range(i, i + k), cid))
        return out

    def others_named(self, prompt: str, own_id: int) -> set[int]:
        """Ids of the classes other than ``own_id`` that ``prompt`` names."""
        words = normalize(prompt).split()
        found = sorted(self._matches(words), key=lambda m: (-len(m[0]), m[1] != own_id, m[0].start))
        taken: set[int] = set()
        named = set()
        for span, cid in found:
            if taken.isdisjoint(span):
                taken.update(span)
                if cid != own_id:
                    named.add(cid)
        return named


def names_other_class(prompt: str, own: Sequence[str], others: Sequence[str]) -> bool:
    """True when ``prompt`` names one of ``others`` where no longer (or equal) ``own`` name
    stands (see :class:`ClassNames`)."""
    return bool(ClassNames({0: own, 1: others}).others_named(prompt, 0))


def repair_label(prompt: str, class_name: str) -> str:
    """Make an unlabeled caption name its class: ``"<class>, <caption>"``."""
    return f"{class_name}, {prompt.strip()}"


def clean(prompt: str) -> str:
    """One line, no surrounding quotes, bullets or numbering."""
    text = " ".join(prompt.split())
    text = re.sub(r"^(\d+[.)]\s*|[-*•]\s*)", "", text)
    return text.strip().strip("\"'“”‘’").strip()


# ----------------------------------------------------------------------------- the loop


def collect_prompts(
    strategy: PromptStrategy,
    classes: Sequence[ClassInfo],
    spec: PromptsSpec,
    seed: int,
    synonyms: dict[str, list[str]] | None = None,
    descriptions: dict[str, str] | None = None,
) -> tuple[list[PromptRecord], dict[str, ClassStats]]:
    """Ask ``strategy`` for candidates round by round and keep those that name their class (or
    are repaired to), name no other class of ``classes`` (or its synonyms; those are dropped, even
    under ``repair``) and are not near-duplicates of a kept one, until ``per_class`` per class or
    ``max_rounds``. Returns the records (class order, then acceptance order) and per-class stats."""
    synonyms = synonyms or {}
    descriptions = descriptions or {}
    names = ClassNames({c.id: [c.name, *synonyms.get(c.name, [])] for c in classes})
    accepted: dict[int, list[PromptRecord]] = {c.id: [] for c in classes}
    stats = {c.name: ClassStats() for c in classes}
    for round_index in range(spec.max_rounds):
        requests = [
            ClassRequest(
                cls=c,
                need=spec.per_class - len(accepted[c.id]),
                accepted=[r.prompt for r in accepted[c.id]],
                synonyms=list(synonyms.get(c.name, [])),
                description=descriptions.get(c.name),
            )
            for c in classes
            if len(accepted[c.id]) < spec.per_class
        ]
        if not requests:
            break
        rng = random.Random(f"{seed}:{strategy.name}:{round_index}")
        proposals = strategy.propose(requests, round_index, rng)
        progress = False
        for req in requests:
            kept = accepted[req.cls.id]
            st = stats[req.cls.name]
            for cand in proposals.get(req.cls.id, []):
                if cand.malformed:
                    st.malformed_answers += 1
                    continue
                if len(kept) >= spec.per_class:
                    break
                st.proposed += 1
                text = clean(cand.prompt)
                if not text:
                    continue
                if spec.label_check != "off" and names.others_named(text, req.cls.id):
                    st.dropped_other_class += 1  # never repaired: two classes in one image
                    continue
                if spec.label_check != "off" and not names_class(
                    text, [req.cls.name, *req.synonyms]
                ):
                    if spec.label_check == "drop":
                        st.dropped_unlabeled += 1
                        continue
                    text = repair_label(text, req.cls.name)
                    st.repaired += 1
                if any(similarity(text, k.prompt) >= spec.near_duplicate for k in kept):
                    st.duplicates += 1
                    continue
                kept.append(
                    PromptRecord(req.cls.id, req.cls.name, text, strategy.name, cand.source)
                )
                st.accepted += 1
                progress = True
        if not progress:
            break
    records = [r for c in classes for r in accepted[c.id]]
    return records, stats
