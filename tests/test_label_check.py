"""The label check's other-class rule (a caption naming a different class of the recipe is dropped,
never repaired, and counted) and malformed JSON answers (never a prompt; counted)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthset.classes import ClassInfo
from synthset.prompts.base import Candidate, ClassRequest, collect_prompts
from synthset.prompts.llm.openai_compat import OpenAICompatibleBackend
from synthset.prompts.llm_common import parse_list
from synthset.prompts.metaprompt import MetapromptStrategy
from synthset.prompts.synthclip import SynthclipStrategy
from synthset.recipe import LLMSpec, PromptsSpec
from synthset.testing_llm import ChatServer, completion


class FakeStrategy:
    """Proposes fixed captions per class name in round 0, none later; records who was asked."""

    name = "fake"

    def __init__(self, captions: dict[str, list[str]]) -> None:
        self.captions = captions
        self.asked: list[tuple[int, str, int]] = []

    def propose(
        self, requests: Sequence[ClassRequest], round_index: int, rng: random.Random
    ) -> dict[int, list[Candidate]]:
        out = {}
        for req in requests:
            self.asked.append((round_index, req.cls.name, req.need))
            texts = self.captions.get(req.cls.name, []) if round_index == 0 else []
            out[req.cls.id] = [Candidate(t, f"fake:r{round_index}") for t in texts]
        return out


def _classes(*names: str) -> list[ClassInfo]:
    return [ClassInfo(i, n, n.replace(" ", "_")) for i, n in enumerate(names)]


def _run(
    captions: dict[str, list[str]],
    names: Sequence[str],
    synonyms: dict[str, list[str]] | None = None,
    **spec: Any,
):
    strategy = FakeStrategy(captions)
    spec_ = PromptsSpec(strategy="template", **{"per_class": 2, "max_rounds": 3, **spec})
    records, stats = collect_prompts(strategy, _classes(*names), spec_, 0, synonyms=synonyms)
    by_class: dict[str, list[str]] = {}
    for r in records:
        by_class.setdefault(r.class_name, []).append(r.prompt)
    return by_class, stats, strategy


@pytest.mark.parametrize("mode", ["repair", "drop"])
def test_a_caption_naming_another_class_is_dropped_not_repaired(mode: str) -> None:
    captions = {
        "cat": ["a photo of a truck", "a cat on a sofa"],
        "truck": ["a red truck on a road", "a truck in the rain"],
    }
    by_class, stats, strategy = _run(captions, ["cat", "truck"], label_check=mode)
    assert by_class["cat"] == ["a cat on a sofa"]
    assert all("truck" not in p for p in by_class["cat"])
    st = stats["cat"]
    assert st.dropped_other_class == 1
    assert st.repaired == 0 and st.dropped_unlabeled == 0
    # the loop asked for the missing prompt again in the next round, as for other drops
    assert (1, "cat", 1) in strategy.asked
    # the rate is in the stats that prompts_report.json is made of
    assert vars(stats["truck"])["dropped_other_class"] == 0


def test_off_checks_nothing() -> None:
    by_class, stats, _ = _run({"cat": ["a photo of a truck"]}, ["cat", "truck"], label_check="off")
    assert by_class["cat"] == ["a photo of a truck"]
    assert stats["cat"].dropped_other_class == 0


def test_names_containing_other_names_do_not_false_positive() -> None:
    captions = {
        "red fox": ["a red fox in the snow", "two red foxes at dawn"],
        "fox": ["a fox in a meadow", "a red fox on a log"],  # names 'red fox': another class
        "cat": ["a cat beside a wildcat", "a sleepy cat", "a cat on a mat"],
        "wildcat": ["a wildcat in the forest", "a wildcat at night"],
    }
    by_class, stats, _ = _run(captions, ["red fox", "fox", "cat", "wildcat"], label_check="drop")
    assert by_class["red fox"] == ["a red fox in the snow", "two red foxes at dawn"]
    assert stats["red fox"].dropped_other_class == 0
    assert by_class["wildcat"] == ["a wildcat in the forest", "a wildcat at night"]
    assert stats["wildcat"].dropped_other_class == 0
    assert by_class["fox"] == ["a fox in a meadow"]
    assert stats["fox"].dropped_other_class >= 1
    assert by_class["cat"] == ["a sleepy cat", "a cat on a mat"]
    assert stats["cat"].dropped_other_class == 1


def test_a_synonym_of_another_class_counts_as_that_class() -> None:
    captions = {
        "car": ["a car overtaking a lorry", "lorries and a car", "a car at night"],
        "truck": ["a truck on a road"],
    }
    synonyms = {"truck": ["lorry", "lorries"], "car": ["automobile"]}
    by_class, stats, _ = _run(captions, ["car", "truck"], synonyms, label_check="repair")
    assert by_class["car"] == ["a car at night"]
    assert stats["car"].dropped_other_class == 2
    # an own synonym is not another class
    by_class, stats, _ = _run(
        {"car": ["an automobile"]}, ["car", "truck"], synonyms, label_check="drop"
    )
    assert by_class["car"] == ["an automobile"]
    assert stats["car"].dropped_other_class == 0


@pytest.mark.parametrize(
    "answer",
    [
        '{"captions": ["a canoe at dusk",',
        '[{"caption": "a canoe on a lake"',
        '```json\n{"captions": ["a canoe at dusk", "a canoe\n```',
        'Here you go: {"captions": ["a canoe on a calm lake", "a red canoe',
        '{"captions": [\n  "a canoe at dusk",\n  "a canoe in fog",\n',
    ],
)
def test_malformed_json_never_becomes_a_prompt(tmp_path: Path, answer: str) -> None:
    assert parse_list(answer) == []
    with ChatServer(lambda p: completion(answer)) as server:
        llm = LLMSpec(
            model="tiny-chat",
            base_url=server.base_url,
            api_key_env=None,
            max_retries=1,
            timeout=5.0,
            structured_output="off",
        )
        spec = PromptsSpec(strategy="synthclip", llm=llm, per_class=2, label_check="repair")
        backend = OpenAICompatibleBackend(llm, tmp_path / "cache", backoff=0.01)
        records, stats = collect_prompts(
            SynthclipStrategy(spec, backend), _classes("canoe", "kayak"), spec, 0
        )
    assert records == []
    assert stats["canoe"].malformed_answers >= 1
    assert stats["canoe"].proposed == 0


def test_cli_reports_the_other_class_rate(tmp_path: Path) -> None:
    captions = tmp_path / "captions.txt"
    captions.write_text(
        "a photo of a truck => cat\na cat on a sofa => cat\n"
        "a cat in a truck => truck\na truck on a road => truck\n"
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "classes": {"names": ["cat", "truck"]},
                "generate": {
                    "images_per_class": 2,
                    "generator": {"kind": "text2image", "model": "m"},
                },
                "output_dir": str(tmp_path / "run"),
                "prompts": {
                    "strategy": "file",
                    "file": str(captions),
                    "per_class": 1,
                    "shortfall": "warn",
                },
            }
        )
    )
    env = os.environ | {"HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-m", "synthset.cli", "prompts", str(recipe)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "50.0% named another class" in " ".join(out.stderr.split())
    report = json.loads((tmp_path / "run" / "prompts_report.json").read_text())
    assert report["stats"]["cat"]["dropped_other_class"] == 1
    assert report["stats"]["truck"]["dropped_other_class"] == 1


def test_metaprompt_directions_naming_a_class_are_left_out(tmp_path: Path) -> None:
    def respond(payload: dict[str, Any]) -> Any:
        user = payload["messages"][-1]["content"]
        if user.startswith("I am building"):
            return completion("1. parked beside a truck at dawn\n2. a foggy harbor at noon")
        concept = re.search(r"^Concept: ([^(\n]+?)(?: \(|$)", user, re.MULTILINE)
        assert concept
        return completion(
            f"1. a {concept.group(1)} on a quiet pier\n2. a {concept.group(1)} asleep"
        )

    with ChatServer(respond) as server:
        llm = LLMSpec(
            model="tiny-chat",
            base_url=server.base_url,
            api_key_env=None,
            max_retries=1,
            timeout=5.0,
            structured_output="off",
        )
        spec = PromptsSpec(strategy="metaprompt", llm=llm, per_class=2, metaprompts=2)
        backend = OpenAICompatibleBackend(llm, tmp_path / "cache", backoff=0.01)
        records, _ = collect_prompts(
            MetapromptStrategy(spec, backend), _classes("cat", "truck"), spec, 0
        )
        directions = {
            m.group(1)
            for p in server.requests
            if (m := re.search(r"^Direction: (.+)$", p["messages"][-1]["content"], re.M))
        }
    assert directions == {"a foggy harbor at noon"}
    assert len(records) == 4
