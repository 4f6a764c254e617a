"""The extension seams: every registry lists exactly the names its recipe field accepts, and a
new generator, adapter or executor plugs in with its own file plus one registry line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
from PIL import Image

from synthset.adapt.registry import ADAPTERS
from synthset.errors import SynthsetError
from synthset.executors.registry import EXECUTORS
from synthset.executors.trainings import RUNNERS
from synthset.generators.registry import GENERATORS
from synthset.pipeline import StageLog, run_all
from synthset.prompts.llm.factory import BACKENDS
from synthset.prompts.registry import STRATEGIES
from synthset.recipe import (
    AdaptSpec,
    EvaluateSpec,
    GenerateSpec,
    GeneratorSpec,
    LLMSpec,
    PromptsSpec,
    Recipe,
    recipe_from_dict,
)
from synthset.registry import Registry
from synthset.store.atomic import read_jsonl

SEAMS = [
    (GENERATORS, GeneratorSpec, "kind"),
    (STRATEGIES, PromptsSpec, "strategy"),
    (BACKENDS, LLMSpec, "backend"),
    (ADAPTERS, AdaptSpec, "method"),
    (EXECUTORS, GenerateSpec, "executor"),
    (RUNNERS, EvaluateSpec, "executor"),
]


@pytest.mark.parametrize(
    ("registry", "spec", "field"), SEAMS, ids=[f"{s[1].__name__}.{s[2]}" for s in SEAMS]
)
def test_registry_and_recipe_literal_list_the_same_names(
    registry: Registry[Any], spec: type, field: str
) -> None:
    assert set(get_args(spec.model_fields[field].annotation)) == set(registry.names())
    for name in registry.names():  # every entry imports
        assert isinstance(registry.load(name), type)


def test_curation_scorers_registry_matches_the_recipe() -> None:
    from synthset.curate.registry import SCORERS
    from synthset.recipe.curate import ScorerName

    assert set(get_args(ScorerName)) == set(SCORERS.names())
    for name in SCORERS.names():
        assert isinstance(SCORERS.load(name), type)


def test_export_formats_registry_matches_the_recipe() -> None:
    from synthset.export.registry import EXPORTERS
    from synthset.recipe.export import ExportFormat

    assert set(get_args(ExportFormat)) == set(EXPORTERS.names())
    assert all(callable(EXPORTERS.load(name)) for name in EXPORTERS.names())


def test_an_unknown_name_is_a_one_line_error_listing_the_choices() -> None:
    with pytest.raises(SynthsetError) as err:
        GENERATORS.load("dalle")
    assert str(err.value) == (
        "generate.generator.kind: unknown 'dalle'; choose one of tiny, text2image, img2img, "
        "inpaint, inversion"
    )


def test_no_kind_switch_outside_the_recipe_and_the_generator_registry() -> None:
    src = Path(__file__).resolve().parents[1] / "src" / "synthset"
    hits = [
        f"{path.relative_to(src)}:{n}"
        for path in src.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if 'kind == "' in line
    ]
    allowed = [h for h in hits if h.startswith(("recipe/", "generators/registry.py"))]
    assert hits == allowed


# ----------------------------------------------------------------------------- plug-ins


def _digits(tmp_path: Path, **sections: Any) -> Recipe:
    base = {
        "output_dir": str(tmp_path / "run"),
        "classes": {"dataset": "digits"},
        "real": {"source": "digits"},
        "generate": {"images_per_class": 4, "batch_size": 8, "generator": {"kind": "tiny"}},
        "adapt": {"image_size": 8, "channels": [8, 16], "steps": 2, "batch_size": 16},
        "report": {"enabled": False},
    }
    return recipe_from_dict(base | sections)


def _with(recipe: Recipe, section: str, **values: Any) -> Recipe:
    """``recipe`` with fields set that its Literal types do not know yet (a new registry name):
    what a newcomer's recipe would say once the name is added to the Literal."""
    part = getattr(recipe, section)
    return recipe.model_copy(update={section: part.model_copy(update=values)})


def _generator(recipe: Recipe, **values: Any) -> Recipe:
    gen = recipe.generate
    assert gen is not None
    return recipe.model_copy(
        update={
            "generate": gen.model_copy(
                update={"generator": gen.generator.model_copy(update=values)}
            )
        }
    )


def _pixels(run: Path) -> dict[str, bytes]:
    rows = read_jsonl(run / "images" / "metadata.jsonl")
    return {r["item_id"]: (run / "images" / r["file_name"]).read_bytes() for r in rows}


@pytest.fixture
def solid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(GENERATORS.entries, "solid", "seam_fakes:SolidColorGenerator")


def test_a_new_generator_runs_through_the_pipeline(tmp_path: Path, solid: None) -> None:
    recipe = _generator(_digits(tmp_path), kind="solid").model_copy(update={"adapt": None})
    log = StageLog()
    run = run_all(recipe, progress=False, log=log)
    assert log.status("generate") == "ran"
    rows = read_jsonl(run.images / "metadata.jsonl")
    assert len(rows) == 40 and {r["generator"] for r in rows} == {"solid"}
    for r in rows:
        level = np.asarray(Image.open(run.images / r["file_name"]))[4, 4]
        assert level == 20 * r["label"]
    again = StageLog()
    run_all(recipe, progress=False, log=again)
    assert again.status("generate") == "skipped"


def test_a_new_adapter_fits_on_real_train_and_feeds_the_generator(
    tmp_path: Path, solid: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ADAPTERS.entries, "mean_level", "seam_fakes:MeanLevelAdapter")
    recipe = _with(_generator(_digits(tmp_path), kind="solid"), "adapt", method="mean_level")
    run = run_all(recipe, progress=False)
    from seam_fakes import COLORS_FILE

    learned = json.loads((run.adapt / COLORS_FILE).read_text())
    assert set(learned) == {str(c) for c in range(10)}
    rows = read_jsonl(run.images / "metadata.jsonl")
    levels = {
        r["label"]: int(np.asarray(Image.open(run.images / r["file_name"]))[4, 4]) for r in rows
    }
    # every class's images carry the grey level learned from its real images
    assert levels == {int(c): round(v) for c, v in learned.items()}
    assert any(levels[c] != 20 * c for c in levels)  # not the generator's own default


def test_a_new_executor_makes_the_same_images_as_the_local_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(EXECUTORS.entries, "reversed_shards", "seam_fakes:ReversedShardsExecutor")
    local = run_all(_digits(tmp_path / "local"), progress=False)
    sharded_recipe = _with(_digits(tmp_path / "sharded"), "generate", executor="reversed_shards")
    sharded = run_all(sharded_recipe, progress=False)
    assert sorted(p.name for p in sharded.root.glob("manifest.shard*of3.jsonl")) == [
        "manifest.shard0of3.jsonl",
        "manifest.shard1of3.jsonl",
        "manifest.shard2of3.jsonl",
    ]
    assert _pixels(sharded.root) == _pixels(local.root)
    assert len(_pixels(local.root)) == 40
