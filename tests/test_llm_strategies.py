"""LLM prompt strategies (synclr, synthclip, metaprompt) end to end: the real OpenAI-compatible
backend against a real chat server on 127.0.0.1, and collect_prompts filtering the answers."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from synthset.classes import ClassInfo
from synthset.prompts.base import ClassStats, PromptRecord, collect_prompts, names_class, similarity
from synthset.prompts.llm.base import ChatRequest
from synthset.prompts.llm.openai_compat import OpenAICompatibleBackend
from synthset.prompts.llm_common import (
    chunks,
    derive_seed,
    oversample,
    parse_list,
    split_count,
    split_pair,
)
from synthset.prompts.metaprompt import FALLBACK_DIRECTION, MetapromptStrategy
from synthset.prompts.synclr import SynclrStrategy, shipped_examples
from synthset.prompts.synthclip import SynthclipStrategy
from synthset.recipe import LLMSpec, PromptsSpec
from synthset.testing_llm import ChatServer, Reply, completion

CLASSES = [ClassInfo(0, "golden retriever", "golden_retriever"), ClassInfo(1, "canoe", "canoe")]
WORDS = [
    "misty",
    "harbor",
    "alpine",
    "meadow",
    "neon",
    "alley",
    "quiet",
    "library",
    "sandy",
    "dune",
    "frozen",
    "lake",
    "busy",
    "market",
    "old",
    "bridge",
    "rooftop",
    "garden",
    "vineyard",
    "terrace",
    "dim",
    "workshop",
    "foggy",
    "pier",
    "cobbled",
    "square",
    "bamboo",
    "grove",
    "glass",
    "atrium",
    "autumn",
    "orchard",
    "rainy",
    "platform",
    "pastel",
    "dawn",
    "harsh",
    "noon",
    "velvet",
    "dusk",
    "macro",
    "telephoto",
    "aerial",
    "candid",
    "grainy",
    "vivid",
    "muted",
    "silhouette",
    "reflection",
]
STRATEGIES: dict[str, type] = {
    "synclr": SynclrStrategy,
    "synthclip": SynthclipStrategy,
    "metaprompt": MetapromptStrategy,
}


# --- helpers -----------------------------------------------------------------------------------


def _user(payload: dict[str, Any]) -> str:
    return payload["messages"][-1]["content"]


def _concept(payload: dict[str, Any]) -> str:
    match = re.search(r"^Concept: ([^(\n]+?)(?: \(|$)", _user(payload), re.MULTILINE)
    assert match, _user(payload)
    return match.group(1)


def _asked(payload: dict[str, Any]) -> int:
    match = re.search(r"Write (\d+)", _user(payload))
    assert match
    return int(match.group(1))


def _words(rng: random.Random, k: int = 5) -> str:
    return " ".join(rng.sample(WORDS, k))


def _spec(strategy: str, server: ChatServer, **fields: Any) -> PromptsSpec:
    llm = {
        "model": "tiny-chat",
        "base_url": server.base_url,
        "api_key_env": None,
        "max_retries": 1,
        "timeout": 5.0,
        "concurrency": 4,
        **fields.pop("llm", {}),
    }
    return PromptsSpec(strategy=strategy, llm=LLMSpec(**llm), **fields)


class CountingBackend:
    """Delegates to the real backend and records the size of every ``complete`` batch."""

    def __init__(self, inner: OpenAICompatibleBackend) -> None:
        self.inner, self.name, self.batches = inner, inner.name, []

    def complete(self, requests: Sequence[ChatRequest]) -> list[str]:
        self.batches.append(len(requests))
        return self.inner.complete(requests)


def _run(
    spec: PromptsSpec, cache_dir: Path, seed: int = 7
) -> tuple[list[PromptRecord], dict[str, ClassStats], CountingBackend]:
    assert spec.llm is not None
    backend = CountingBackend(OpenAICompatibleBackend(spec.llm, cache_dir, backoff=0.01))
    strategy = STRATEGIES[spec.strategy](spec, backend)
    records, stats = collect_prompts(strategy, CLASSES, spec, seed)
    return records, stats, backend


def _assert_good(records: list[PromptRecord], per_class: int, near: float) -> None:
    for cls in CLASSES:
        mine = [r.prompt for r in records if r.class_id == cls.id]
        assert len(mine) == per_class
        assert all(names_class(p, [cls.name]) for p in mine)
        for i, a in enumerate(mine):
            assert all(similarity(a, b) < near for b in mine[i + 1 :])


# --- parsing helpers ---------------------------------------------------------------------------


def test_parse_list_reads_json_numbered_and_bulleted_answers() -> None:
    numbered = 'Sure! Here are 3:\n1. a canoe on a lake\n2) "a canoe in reeds"\n- **a canoe**\n'
    assert parse_list(numbered + "Let me know if you want more.") == [
        "a canoe on a lake",
        "a canoe in reeds",
        "a canoe",
    ]
    fenced = '```json\n{"captions": ["a", {"caption": "b c"}, ["d e", ["canoe"]]]}\n```'
    assert parse_list(fenced) == ["a", "b c", "d e"]
    assert parse_list('{"prompts": ["x y"]}', "prompts") == ["x y"]
    assert parse_list("Caption: a canoe at dusk\nCaption: a canoe at noon") == [
        "a canoe at dusk",
        "a canoe at noon",
    ]
    assert parse_list("I'm sorry, I can't help with that.") == []
    assert parse_list('{"captions": []}') == []


def test_split_pair_keeps_the_caption_and_drops_other_concepts() -> None:
    names = ["golden retriever", "goldie"]
    assert split_pair("golden retriever => a golden retriever in snow", names) == (
        "a golden retriever in snow"
    )
    assert split_pair("a goldie asleep on a porch => goldie", names) == "a goldie asleep on a porch"
    assert split_pair("red fox => a red fox in a meadow", names) is None
    assert split_pair("a plain caption", names) == "a plain caption"


def test_seeds_and_counts_are_deterministic_and_spread() -> None:
    assert derive_seed(3, "a", 1) == derive_seed(3, "a", 1)
    assert derive_seed(3, "a", 1) != derive_seed(3, "a", 2)
    assert 0 <= derive_seed(123456789, 0) < 2**31
    assert derive_seed(7, "class", 0) == 867703320  # stable across processes and platforms
    assert oversample(4) == 6 and oversample(0) == 0
    assert split_count(7, 3) == [3, 2, 2] and sum(split_count(2, 5)) == 2
    assert chunks(30, 12) == [10, 10, 10] and chunks(0, 12) == []


def test_shipped_synclr_examples_name_their_concept() -> None:
    examples = shipped_examples()
    assert len(examples) >= 12
    assert all(names_class(e.caption, [e.concept]) for e in examples)


# --- synclr ------------------------------------------------------------------------------------


def _synclr_respond(payload: dict[str, Any]) -> Reply:
    """Numbered 'concept => caption' lines: labeled, echoed example, unlabeled, duplicate."""
    c, rng = _concept(payload), random.Random(payload["seed"])
    first = f"a {c} {_words(rng)}"
    lines = [
        f"{c} => {first}",
        "red fox => a red fox trotting across a frosted meadow at sunrise",  # echoed example
        f"{c} => {_words(rng, 6)}",  # unlabeled: repaired
        f"{c} => {first.upper()}!",  # near-duplicate
        f"{c} => a {c} {_words(rng)}",
        f"{c} => {_words(rng)} with a {c}",
        f"{c} => a {c} beside {_words(rng)}",  # never reached: per_class already met
    ]
    return completion("Here you go:\n" + "\n".join(f"{i}. {ln}" for i, ln in enumerate(lines, 1)))


def test_synclr_end_to_end_with_plain_numbered_lines(tmp_path: Path) -> None:
    with ChatServer(_synclr_respond) as server:
        spec = _spec("synclr", server, per_class=4, llm={"structured_output": "off"})
        records, stats, backend = _run(spec, tmp_path / "cache")
        requests = list(server.requests)
    _assert_good(records, 4, spec.near_duplicate)
    for cls in CLASSES:
        st = stats[cls.name]
        assert (st.proposed, st.accepted, st.repaired, st.duplicates) == (5, 4, 1, 1)
        assert st.dropped_unlabeled == 0
    assert not any("red fox" in r.prompt for r in records)
    assert {r.source for r in records} == {"llm:synclr:r0"}
    assert backend.batches == [2]  # one request per class, both in one complete() call
    assert len(requests) == 2 and "response_format" not in requests[0]
    shipped = {f"{e.concept} => {e.caption}" for e in shipped_examples()}
    for payload in requests:
        text = _user(payload)
        shots = text.split("Examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
        assert len(shots) == 3 and set(shots) <= shipped
        assert _asked(payload) == 6  # ceil(1.5 * 4)
        assert isinstance(payload["seed"], int)
    assert len({p["seed"] for p in requests}) == 2


# --- synthclip ---------------------------------------------------------------------------------


def _synthclip_respond(payload: dict[str, Any]) -> Reply:
    """JSON in a code fence: labeled, unlabeled, exact duplicate, labeled."""
    c, rng = _concept(payload), random.Random(payload["seed"])
    first = f"a {c} {_words(rng)}"
    captions = [first, _words(rng, 6), first, f"{_words(rng)} and a {c}"]
    return completion("```json\n" + json.dumps({"captions": captions}) + "\n```")


def test_synthclip_end_to_end_with_json_and_several_rounds(tmp_path: Path) -> None:
    with ChatServer(_synthclip_respond) as server:
        spec = _spec("synthclip", server, per_class=5, label_check="drop")
        records, stats, backend = _run(spec, tmp_path / "cache")
        requests = list(server.requests)
    _assert_good(records, 5, spec.near_duplicate)
    for cls in CLASSES:
        st = stats[cls.name]
        # rounds take 2 + 2 + 1 prompts; 4 + 4 + 1 proposed
        assert (st.proposed, st.accepted, st.dropped_unlabeled, st.duplicates) == (9, 5, 2, 2)
        assert st.repaired == 0
        sources = [r.source for r in records if r.class_id == cls.id]
        assert sources == ["llm:synthclip:r0"] * 2 + ["llm:synthclip:r1"] * 2 + ["llm:synthclip:r2"]
    assert backend.batches == [2, 2, 2]
    assert all(p["response_format"]["type"] == "json_schema" for p in requests)
    assert sorted(_asked(p) for p in requests) == [2, 2, 5, 5, 8, 8]
    assert len({p["seed"] for p in requests}) == 6


# --- metaprompt --------------------------------------------------------------------------------

DIRECTIONS = [
    "a candid street photo at dusk",
    "an overhead flat lay on bright paper",
    "a foggy morning shot with muted greens",
    "a candid street photograph at dusk",  # near-duplicate of the first
]


def _metaprompt_respond(payload: dict[str, Any]) -> Reply:
    """Stage 1: four directions (one near-duplicate). Stage 2: labeled, duplicate, unlabeled."""
    text = _user(payload)
    if text.startswith("I am building a photo dataset"):
        return completion(json.dumps({"directions": DIRECTIONS}))
    c, rng = _concept(payload), random.Random(payload["seed"])
    direction = re.search(r"^Direction: (.+)$", text, re.MULTILINE)
    assert direction
    first = f"a {c} in {direction.group(1)} {_words(rng)}"
    return completion(json.dumps({"prompts": [first, first, _words(rng, 6)]}))


def test_metaprompt_two_stages_end_to_end(tmp_path: Path) -> None:
    with ChatServer(_metaprompt_respond) as server:
        spec = _spec(
            "metaprompt", server, per_class=6, metaprompts=3, label_check="drop", domain="pets"
        )
        records, stats, backend = _run(spec, tmp_path / "cache")
        requests = list(server.requests)
    _assert_good(records, 6, spec.near_duplicate)
    for cls in CLASSES:
        st = stats[cls.name]
        assert (st.proposed, st.accepted, st.duplicates, st.dropped_unlabeled) == (12, 6, 3, 3)
    stage1 = [p for p in requests if _user(p).startswith("I am building")]
    stage2 = [p for p in requests if p not in stage1]
    assert len(stage1) == 1 and "photo dataset of pets." in _user(stage1[0])
    assert not any(c.name in _user(stage1[0]) for c in CLASSES)  # class-agnostic: cached apart
    assert backend.batches == [1, 6, 6]  # stage 1, then one batch per round
    used = {re.search(r"^Direction: (.+)$", _user(p), re.MULTILINE).group(1) for p in stage2}
    assert used == set(DIRECTIONS[:3])
    assert {r.source.rsplit(":", 1)[0] for r in records} == {
        "llm:metaprompt:r0",
        "llm:metaprompt:r1",
    }
    by_class = {c.name: [r.prompt for r in records if r.class_id == c.id] for c in CLASSES}
    later = [p for p in stage2 if "Already written" in _user(p)]
    assert len(later) == 6  # every round-1 request, none of round 0
    for payload in later:
        shown = _user(payload).split("Already written (write different ones):\n", 1)[1]
        shown_prompts = [ln[2:] for ln in shown.splitlines() if ln.startswith("- ")]
        assert shown_prompts == by_class[_concept(payload)][:3]
    assert sum(_asked(p) for p in stage2 if "Already written" not in _user(p)) == 2 * 9
    assert sum(_asked(p) for p in later) == 2 * 5


# --- determinism and cache ---------------------------------------------------------------------


RESPONDERS: dict[str, Callable[[dict[str, Any]], Reply]] = {
    "synclr": _synclr_respond,
    "synthclip": _synthclip_respond,
    "metaprompt": _metaprompt_respond,
}


@pytest.mark.parametrize("strategy", sorted(RESPONDERS))
def test_reruns_are_identical_and_cached(tmp_path: Path, strategy: str) -> None:
    llm = {"structured_output": "off"} if strategy == "synclr" else {}
    with ChatServer(RESPONDERS[strategy]) as server:
        extra = {"metaprompts": 2} if strategy == "metaprompt" else {}
        spec = _spec(strategy, server, per_class=5, llm=llm, **extra)
        first, _, _ = _run(spec, tmp_path / "a")
        calls = len(server.requests)
        seeds = sorted(p["seed"] for p in server.requests)
        second, _, _ = _run(spec, tmp_path / "b")  # fresh cache: same requests again
        assert sorted(p["seed"] for p in server.requests[calls:]) == seeds
        assert len(server.requests) == 2 * calls
        third, _, _ = _run(spec, tmp_path / "a")  # warm cache: no HTTP call
        assert len(server.requests) == 2 * calls
        other, _, _ = _run(spec, tmp_path / "c", seed=8)
    assert calls > 0 and first == second == third
    assert [r.prompt for r in other] != [r.prompt for r in first]


@pytest.mark.parametrize("strategy", sorted(RESPONDERS))
def test_renaming_one_class_resends_only_its_requests(tmp_path: Path, strategy: str) -> None:
    """Every request names one class at most, so the answer cache is per class: after renaming
    canoe to kayak, the rerun asks the server about kayak only (stage 1 included)."""
    llm = {"structured_output": "off"} if strategy == "synclr" else {}
    renamed = [CLASSES[0], ClassInfo(1, "kayak", "kayak")]
    with ChatServer(RESPONDERS[strategy]) as server:
        spec = _spec(strategy, server, per_class=5, llm=llm)
        first, _, _ = _run(spec, tmp_path / "cache")
        calls = len(server.requests)
        backend = OpenAICompatibleBackend(spec.llm, tmp_path / "cache", backoff=0.01)
        again, _ = collect_prompts(STRATEGIES[strategy](spec, backend), renamed, spec, 7)
        resent = [_user(p) for p in server.requests[calls:]]
    assert resent and all("kayak" in text and "golden retriever" not in text for text in resent)
    kept = [r for r in again if r.class_id == 0]
    assert kept == [r for r in first if r.class_id == 0]  # the cached answers, same prompts
    assert all(names_class(r.prompt, ["kayak"]) for r in again if r.class_id == 1)


# --- answers without captions ------------------------------------------------------------------


@pytest.mark.parametrize("strategy", sorted(RESPONDERS))
def test_answers_without_captions_end_gracefully(tmp_path: Path, strategy: str) -> None:
    """The LLM refuses for one class (and answers stage 1 with nothing): fewer prompts, no crash."""

    def respond(payload: dict[str, Any]) -> Reply:
        text = _user(payload)
        if text.startswith("I am building") or "Concept: canoe" in text:
            return completion("I'm sorry, I can't help with that.")
        return RESPONDERS[strategy](payload)

    with ChatServer(respond) as server:
        spec = _spec(strategy, server, per_class=4, max_rounds=3, llm={"structured_output": "off"})
        records, stats, _ = _run(spec, tmp_path / "cache")
        refusals = [p for p in server.requests if "Concept: canoe" in _user(p)]
        directions = {
            m.group(1)
            for p in server.requests
            if (m := re.search(r"^Direction: (.+)$", _user(p), re.MULTILINE))
        }
    assert [r for r in records if r.class_id == 1] == []
    assert stats["canoe"].proposed == 0
    assert 1 <= len(refusals) <= spec.max_rounds
    if strategy == "metaprompt":
        assert directions == {FALLBACK_DIRECTION}
    retriever = [r for r in records if r.class_id == 0]
    assert 0 < len(retriever) <= 4
    assert all(names_class(r.prompt, ["golden retriever"]) for r in retriever)


def test_empty_json_answers_return_nothing(tmp_path: Path) -> None:
    with ChatServer(lambda p: completion('{"captions": []}')) as server:
        spec = _spec("synthclip", server, per_class=3)
        records, stats, backend = _run(spec, tmp_path / "cache")
    assert records == [] and backend.batches == [2]
    assert all(s.proposed == 0 for s in stats.values())


# --- recipe wiring, synonyms and descriptions --------------------------------------------------


def test_registry_builds_each_llm_strategy_and_requests_show_synonyms(tmp_path: Path) -> None:
    from synthset.prompts.registry import build_strategy

    def respond(payload: dict[str, Any]) -> Reply:
        return completion(json.dumps({"captions": ["a kayak on a glassy lake at dawn"]}))

    with ChatServer(respond) as server:
        for name in STRATEGIES:
            assert build_strategy(_spec(name, server), tmp_path / name).name == name
        spec = _spec("synthclip", server, per_class=1)
        strategy = build_strategy(spec, tmp_path / "syn")
        records, stats = collect_prompts(
            strategy,
            CLASSES[1:],
            spec,
            seed=1,
            synonyms={"canoe": ["kayak"]},
            descriptions={"canoe": "a narrow boat"},
        )
        text = _user(server.requests[-1])
    assert "Concept: canoe (a narrow boat; also called kayak)" in text
    assert [r.prompt for r in records] == ["a kayak on a glassy lake at dawn"]
    assert stats["canoe"].repaired == 0
