"""The plan: per-item seeds, stable ids, and sharding that never changes an item."""

from __future__ import annotations

import pytest

from synthset.classes import resolve_classes
from synthset.errors import SynthsetError
from synthset.plan import (
    build_plan,
    chunks,
    item_seed,
    load_plan,
    parse_shard,
    save_plan,
    shard_chunks,
)
from synthset.recipe import recipe_from_dict


def make_recipe(per_class: int = 5, seed: int = 0):
    return recipe_from_dict(
        {
            "seed": seed,
            "classes": {"names": ["cat", "dog", "red fox"]},
            "prompts": {"template": "a photo of a {class}"},
            "generate": {
                "images_per_class": per_class,
                "generator": {"kind": "text2image", "model": "m"},
            },
        }
    )


def test_items_have_prompts_labels_and_distinct_seeds() -> None:
    recipe = make_recipe()
    plan = build_plan(recipe, resolve_classes(recipe.classes))
    assert len(plan) == 15
    assert len({it.item_id for it in plan}) == 15
    assert len({it.seed for it in plan}) == 15
    fox = [it for it in plan if it.class_id == 2]
    assert {it.prompt for it in fox} == {"a photo of a red fox"}
    assert all(it.seed == item_seed(0, it.item_id) for it in plan)


def test_seed_depends_on_recipe_seed_and_id_only() -> None:
    assert item_seed(0, "0001-000002") == item_seed(0, "0001-000002")
    assert item_seed(0, "0001-000002") != item_seed(1, "0001-000002")
    assert item_seed(0, "0001-000002") != item_seed(0, "0001-000003")
    assert 0 <= item_seed(123, "x") < 2**63


def test_growing_the_plan_keeps_existing_items() -> None:
    small, big = make_recipe(3), make_recipe(6)
    a = build_plan(small, resolve_classes(small.classes))
    b = {it.item_id: it for it in build_plan(big, resolve_classes(big.classes))}
    assert all(b[it.item_id] == it for it in a)


def test_save_and_load_roundtrip(tmp_path) -> None:
    recipe = make_recipe()
    plan = build_plan(recipe, resolve_classes(recipe.classes))
    save_plan(tmp_path / "plan.jsonl", plan)
    assert load_plan(tmp_path / "plan.jsonl") == plan


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_cover_every_chunk_exactly_once(count: int) -> None:
    recipe = make_recipe(per_class=11)
    plan = build_plan(recipe, resolve_classes(recipe.classes))
    all_chunks = chunks(plan, 4)
    seen = [c for i in range(count) for c in shard_chunks(all_chunks, i, count)]
    ids = sorted(it.item_id for c in seen for it in c)
    assert ids == sorted(it.item_id for it in plan)
    # a chunk is the same list of items whichever shard runs it
    assert sorted(map(tuple, seen), key=lambda c: c[0].item_id) == sorted(
        map(tuple, all_chunks), key=lambda c: c[0].item_id
    )


@pytest.mark.parametrize("text", ["1", "a/b", "3/3", "-1/2", "0/0"])
def test_bad_shard_specs(text: str) -> None:
    with pytest.raises(SynthsetError, match="--shard"):
        parse_shard(text)


def test_parse_shard() -> None:
    assert parse_shard(None, {}) == (0, 1)
    assert parse_shard("2/5") == (2, 5)


@pytest.mark.parametrize(
    ("env", "shard"),
    [
        (
            {
                "SLURM_ARRAY_TASK_ID": "0",
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_COUNT": "4",
            },
            (0, 4),
        ),
        # arrays need not start at 0 (--array=1-8) nor step by 1 (--array=0-30:10)
        (
            {
                "SLURM_ARRAY_TASK_ID": "8",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_COUNT": "8",
            },
            (7, 8),
        ),
        (
            {
                "SLURM_ARRAY_TASK_ID": "20",
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_COUNT": "4",
                "SLURM_ARRAY_TASK_STEP": "10",
            },
            (2, 4),
        ),
    ],
)
def test_shard_of_a_slurm_array_task(env: dict[str, str], shard: tuple[int, int]) -> None:
    assert parse_shard("slurm", env) == shard
    assert parse_shard(None, env) == shard  # inside an array, no --shard is needed


def test_no_shard_outside_an_array_is_the_whole_plan() -> None:
    assert parse_shard(None, {"SLURM_JOB_ID": "7"}) == (0, 1)  # a plain (non-array) job
    assert parse_shard("1/3", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}) == (
        1,
        3,
    )  # an explicit --shard wins


def test_shard_slurm_outside_an_array_is_one_line() -> None:
    with pytest.raises(SynthsetError, match="SLURM_ARRAY_TASK_ID is not set") as err:
        parse_shard("slurm", {})
    assert "\n" not in str(err.value)
