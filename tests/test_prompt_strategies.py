"""The offline prompt strategies (template, fakeit, file) alone and through collect_prompts."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from synthset.classes import ClassInfo, resolve_classes
from synthset.errors import SynthsetError
from synthset.prompts.base import ClassRequest, collect_prompts, names_class
from synthset.prompts.fakeit import FakeItStrategy, shipped_scenes
from synthset.prompts.file import FileStrategy
from synthset.prompts.template import TemplateStrategy, shipped_slots, shipped_templates
from synthset.recipe import ClassesSpec, PromptsSpec

CLASSES = resolve_classes(ClassesSpec(names=["cat", "owl", "fire truck"]))


def requests(need: int, classes: list[ClassInfo] = CLASSES) -> list[ClassRequest]:
    return [ClassRequest(cls=c, need=need, accepted=[]) for c in classes]


def texts(strategy: object, seed: int, need: int = 5) -> dict[int, list[str]]:
    out = strategy.propose(requests(need), 0, random.Random(seed))  # type: ignore[attr-defined]
    return {cid: [c.prompt for c in cands] for cid, cands in out.items()}


# ----------------------------------------------------------------------------- template


def test_cross_gives_every_combination_exactly_once() -> None:
    spec = PromptsSpec(
        templates=["a photo of a {class} in {place}.", "a {style} drawing of a {class}."],
        slots={"place": ["a park", "the snow", "a kitchen"], "style": ["pencil", "ink"]},
        combine="cross",
        per_class=100,
        near_duplicate=1.0,
        label_check="off",
    )
    records, _ = collect_prompts(TemplateStrategy(spec), CLASSES[:1], spec, seed=0)
    got = [r.prompt for r in records]
    expected = [f"a photo of a cat in {p}." for p in ("a park", "the snow", "a kitchen")] + [
        f"a {s} drawing of a cat." for s in ("pencil", "ink")
    ]
    assert got == expected
    assert [r.source for r in records] == ["template:0"] * 3 + ["template:1"] * 2


def test_cross_walks_in_windows_across_rounds() -> None:
    values = [f"v{i}" for i in range(30)]
    spec = PromptsSpec(
        templates=["{class} {a} {b}"],
        slots={"a": values, "b": ["x", "y", "z"]},
        combine="cross",
        per_class=90,
        near_duplicate=1.0,
        max_rounds=5,
    )
    strategy = TemplateStrategy(spec)
    assert strategy.total() == 90 and strategy.window == 360
    records, _ = collect_prompts(strategy, CLASSES[:2], spec, seed=0)
    for cls in CLASSES[:2]:
        got = [r.prompt for r in records if r.class_id == cls.id]
        want = [f"{cls.name} {a} {b}" for a, b in itertools.product(values, ["x", "y", "z"])]
        assert got == want


def test_sample_is_deterministic_per_seed() -> None:
    spec = PromptsSpec(templates="photo", combine="sample", per_class=5)
    a = texts(TemplateStrategy(spec), seed=1)
    b = texts(TemplateStrategy(spec), seed=1)
    c = texts(TemplateStrategy(spec), seed=2)
    assert a == b
    assert a != c
    assert all(len(v) >= 5 for v in a.values())


def test_sample_covers_a_small_space_fully() -> None:
    spec = PromptsSpec(templates=["{class} on {ground}"], slots={"ground": ["sand", "grass"]})
    got = texts(TemplateStrategy(spec), seed=0, need=5)
    assert sorted(got[0]) == ["cat on grass", "cat on sand"]


def test_unknown_slot_names_slot_and_template() -> None:
    spec = PromptsSpec(templates=["a photo of a {class} with {gadget}"])
    with pytest.raises(SynthsetError, match=r"\{gadget\}") as e:
        TemplateStrategy(spec)
    assert "a photo of a {class} with {gadget}" in str(e.value)
    assert "prompts.slots.gadget" in str(e.value)


def test_attribute_slot_is_rejected() -> None:
    with pytest.raises(SynthsetError, match="not a plain name"):
        TemplateStrategy(PromptsSpec(templates=["{class} {x.y}"]))


def test_recipe_slots_override_shipped_defaults() -> None:
    spec = PromptsSpec(
        templates=["a photo of a {class} in {background}."],
        slots={"background": ["a cave"]},
        combine="cross",
    )
    assert texts(TemplateStrategy(spec), seed=0)[0] == ["a photo of a cat in a cave."]


def test_shipped_photo_set() -> None:
    templates = shipped_templates()
    assert 15 <= len(templates) <= 30
    assert all("{class}" in t for t in templates)
    assert len(set(templates)) == len(templates)
    slots = shipped_slots()
    assert {"background", "lighting", "viewpoint"} <= set(slots)
    spec = PromptsSpec(templates="photo", combine="cross")
    strategy = TemplateStrategy(spec)  # every shipped slot has default values
    assert strategy.total() > 100


def test_article_before_vowel_class() -> None:
    spec = PromptsSpec(template="a photo of a {class}", per_class=1)
    owl = [c for c in CLASSES if c.name == "owl"]
    out = TemplateStrategy(spec).propose(requests(1, owl), 0, random.Random(0))
    assert [c.prompt for c in out[owl[0].id]] == ["a photo of an owl"]


def test_template_collect_reaches_per_class() -> None:
    spec = PromptsSpec(templates="photo", per_class=12)
    records, stats = collect_prompts(TemplateStrategy(spec), CLASSES, spec, seed=3)
    for c in CLASSES:
        mine = [r.prompt for r in records if r.class_id == c.id]
        assert len(mine) == 12
        assert len(set(mine)) == 12
        assert all(names_class(p, [c.name]) for p in mine)
        assert stats[c.name].repaired == 0
    again, _ = collect_prompts(TemplateStrategy(spec), CLASSES, spec, seed=3)
    assert again == records


# ----------------------------------------------------------------------------- fakeit


def test_fakeit_prompts_have_class_description_and_scene() -> None:
    spec = PromptsSpec(strategy="fakeit", per_class=8)
    reqs = [
        ClassRequest(cls=CLASSES[0], need=8, accepted=[], description="a small domestic feline"),
        ClassRequest(cls=CLASSES[2], need=8, accepted=[]),
    ]
    out = FakeItStrategy(spec).propose(reqs, 0, random.Random(0))
    scenes = shipped_scenes()
    for req in reqs:
        cands = out[req.cls.id]
        assert len(cands) >= 8
        for cand in cands:
            assert names_class(cand.prompt, [req.cls.name])
            assert any(cand.prompt.endswith(s) for s in scenes)
            assert ("a small domestic feline" in cand.prompt) == (req.description is not None)


def test_fakeit_is_deterministic_and_varies_with_seed() -> None:
    spec = PromptsSpec(strategy="fakeit", per_class=6)
    assert texts(FakeItStrategy(spec), 5) == texts(FakeItStrategy(spec), 5)
    assert texts(FakeItStrategy(spec), 5) != texts(FakeItStrategy(spec), 6)


def test_fakeit_scene_list() -> None:
    scenes = shipped_scenes()
    assert 90 <= len(scenes) <= 150
    assert len(set(scenes)) == len(scenes)
    assert "in a kitchen" in scenes and "on a beach" in scenes


def test_fakeit_recipe_scenes_and_collect() -> None:
    spec = PromptsSpec(strategy="fakeit", per_class=4, slots={"scene": ["on the moon"]})
    records, _ = collect_prompts(
        FakeItStrategy(spec), CLASSES, spec, seed=0, descriptions={"owl": "a bird of prey"}
    )
    # one scene x five prefixes: four distinct prompts per class are available
    assert [sum(r.class_id == c.id for r in records) for c in CLASSES] == [4, 4, 4]
    assert all(r.prompt.endswith("on the moon") for r in records)
    assert all("a bird of prey" in r.prompt for r in records if r.class_name == "owl")


# ----------------------------------------------------------------------------- file


def test_file_strategy_imports_and_counts_unmatched(tmp_path: Path) -> None:
    f = tmp_path / "captions.txt"
    f.write_text(
        "a cat asleep on a sofa => cat\n"
        "a cat chasing a mouse => Cat\n"
        "\n"
        "an owl on a branch at dusk => owl\n"
        "a zebra crossing a river => zebra\n"
        "a red fire truck parked => fire truck\n",
        encoding="utf-8",
    )
    spec = PromptsSpec(strategy="file", file=f, per_class=5)
    strategy = FileStrategy(spec)
    records, _ = collect_prompts(strategy, CLASSES, spec, seed=0)
    assert [(r.prompt, r.class_name) for r in records] == [
        ("a cat asleep on a sofa", "cat"),
        ("a cat chasing a mouse", "cat"),
        ("an owl on a branch at dusk", "owl"),
        ("a red fire truck parked", "fire truck"),
    ]
    assert records[0].source == "file:line1" and records[2].source == "file:line4"
    assert strategy.report() == {
        "captions": 5,
        "unmatched": 1,
        "unmatched_labels": {"zebra": 1},
        "unmatched_captions": [
            {"where": "line 5", "caption": "a zebra crossing a river", "label": "zebra"}
        ],
    }


def test_file_strategy_with_no_matching_class(tmp_path: Path) -> None:
    f = tmp_path / "captions.txt"
    f.write_text("a zebra => zebra\na yak => yak\n", encoding="utf-8")
    spec = PromptsSpec(strategy="file", file=f)
    with pytest.raises(SynthsetError, match="none of the 2 captions"):
        collect_prompts(FileStrategy(spec), CLASSES, spec, seed=0)


def test_file_strategy_json_ids_and_names(tmp_path: Path) -> None:
    f = tmp_path / "captions.json"
    f.write_text(
        '{"captions_single_labeled": [["an owl in snow", [1]], ["a cat in a box", ["cat"]],'
        ' ["a ship", [7]]]}',
        encoding="utf-8",
    )
    spec = PromptsSpec(strategy="file", file=f)
    strategy = FileStrategy(spec)
    records, _ = collect_prompts(strategy, CLASSES, spec, seed=0)
    assert [(r.prompt, r.class_id) for r in records] == [
        ("a cat in a box", 0),
        ("an owl in snow", 1),
    ]
    assert strategy.report()["unmatched_labels"] == {"7": 1}
