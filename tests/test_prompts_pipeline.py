"""The prompts stage from a recipe: prompts.jsonl, the report, the plan using the prompts, and
the CLI verb (preview, export, one-line errors for bad LLM backends)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synthset.errors import SynthsetError
from synthset.pipeline import open_run, stage_plan, stage_prompts
from synthset.prompts.base import names_class
from synthset.prompts.formats import read_captions
from synthset.recipe import recipe_from_dict
from synthset.store.atomic import read_jsonl

BASE = {
    "classes": {"names": ["cat", "red fox", "sailboat"]},
    "generate": {"images_per_class": 10, "generator": {"kind": "text2image", "model": "m"}},
}


def make(tmp_path: Path, prompts: dict, **extra: object):
    return recipe_from_dict(
        {**BASE, "output_dir": str(tmp_path / "run"), "prompts": prompts, **extra}
    )


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MY_LLM_KEY"}
    env |= {"HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "synthset.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_template_prompts_feed_the_plan(tmp_path: Path) -> None:
    recipe = make(
        tmp_path,
        {
            "templates": ["a photo of a {class} on {place}", "a drawing of a {class} in {place}"],
            "slots": {"place": ["grass", "snow", "a table"]},
            "combine": "cross",
            "per_class": 4,
        },
    )
    run = open_run(recipe)
    records = stage_prompts(recipe, run)
    assert len(records) == 12
    for rec in records:
        assert names_class(rec.prompt, [rec.class_name]) and rec.strategy == "template"
    rows = read_jsonl(run.prompts)
    assert [r["prompt"] for r in rows] == [r.prompt for r in records]
    report = json.loads(run.prompts_report.read_text())
    assert report["diversity"]["method"] == "token_jaccard"
    assert report["stats"]["cat"]["accepted"] == 4

    plan = stage_plan(recipe, run)
    fox = [it for it in plan if it.class_name == "red fox"]
    fox_prompts = [r.prompt for r in records if r.class_name == "red fox"]
    assert [it.prompt for it in fox] == [fox_prompts[k % 4] for k in range(10)]


def test_changing_prompts_reruns_the_stage_and_replans(tmp_path: Path) -> None:
    first = make(tmp_path, {"template": "a photo of a {class}"})
    run = open_run(first)
    assert {it.prompt for it in stage_plan(first, run)} >= {"a photo of a cat"}
    second = make(tmp_path, {"template": "a sketch of a {class}"})
    assert "a sketch of a cat" in {it.prompt for it in stage_plan(second, run)}


def test_file_strategy_imports_research_captions(tmp_path: Path) -> None:
    captions = tmp_path / "captions.json"
    captions.write_text(
        json.dumps(
            {
                "captions_single_labeled": [
                    ["a cat asleep on a sofa", [0]],
                    ["a fox in the snow", ["red fox"]],
                    ["a sailboat at dusk", [2]],
                    ["a tabby cat by a window", ["cat"]],
                    ["a zebra", ["zebra"]],
                ]
            }
        )
    )
    recipe = make(tmp_path, {"strategy": "file", "file": str(captions), "per_class": 5})
    records = stage_prompts(recipe, open_run(recipe))
    by_class = {}
    for r in records:
        by_class.setdefault(r.class_name, []).append(r.prompt)
    assert by_class["cat"] == ["a cat asleep on a sofa", "a tabby cat by a window"]
    # "a fox in the snow" does not name "red fox": repaired so the label is in the caption
    assert by_class["red fox"] == ["red fox, a fox in the snow"]


def test_cli_preview_and_export(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                **BASE,
                "output_dir": str(tmp_path / "run"),
                "prompts": {"strategy": "fakeit", "per_class": 6},
            }
        )
    )
    out = cli("prompts", str(recipe), "--preview", "2", "--export", str(tmp_path / "p.json"))
    assert out.returncode == 0, out.stderr
    assert "sailboat" in out.stdout and "prompts: 18 for 3 classes" in out.stderr
    assert "label check: 0.0% repaired" in out.stderr
    exported = read_captions(tmp_path / "p.json")
    assert len(exported) == 18


@pytest.mark.parametrize(
    ("llm", "fragment"),
    [
        (
            {"model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "MY_LLM_KEY"},
            "MY_LLM_KEY is not set",
        ),
        (
            {
                "model": "m",
                "base_url": "http://127.0.0.1:9/v1",
                "api_key_env": None,
                "max_retries": 0,
                "timeout": 2,
            },
            "cannot reach the LLM server",
        ),
    ],
)
def test_bad_llm_backend_is_one_line(tmp_path: Path, llm: dict, fragment: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                **BASE,
                "output_dir": str(tmp_path / "run"),
                "prompts": {"strategy": "synclr", "llm": llm},
            }
        )
    )
    out = cli("prompts", str(recipe))
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_llm_strategy_from_a_recipe_caches_every_answer(tmp_path: Path) -> None:
    from synthset.testing_llm import ChatServer, completion

    def respond(payload: dict) -> object:
        user = payload["messages"][-1]["content"]
        name = next(n for n in ("red fox", "sailboat", "cat") if n in user)
        seed = payload.get("seed", 0)
        return completion(
            "\n".join(
                f"{i + 1}. a {name} seen {place} ({seed % 97})"
                for i, place in enumerate(["at dawn", "in fog", "under neon lights", "in a meadow"])
            )
        )

    with ChatServer(respond) as server:
        llm = {
            "model": "tiny-chat",
            "base_url": server.base_url,
            "api_key_env": None,
            "structured_output": "off",
        }
        recipe = make(tmp_path, {"strategy": "synthclip", "per_class": 3, "llm": llm})
        run = open_run(recipe)
        records = stage_prompts(recipe, run)
        calls = len(server.requests)
        assert calls > 0
        assert len(records) == 9 and all(r.strategy == "synthclip" for r in records)
        # a changed recipe part elsewhere reruns nothing; forcing the stage reuses the LLM cache
        run.stage_marker("prompts").unlink()
        again = stage_prompts(recipe, run)
        assert again == records
        assert len(server.requests) == calls


def test_transformers_backend_from_a_recipe(tmp_path: Path) -> None:
    from synthset.testing import build_tiny_causal_lm

    model = build_tiny_causal_lm(tmp_path / "lm")
    llm = {"backend": "transformers", "model": str(model), "max_tokens": 16, "batch_size": 3}
    recipe = make(tmp_path, {"strategy": "synclr", "per_class": 2, "llm": llm, "max_rounds": 2})
    records = stage_prompts(recipe, open_run(recipe))
    # a random tiny LM writes nonsense: the label check repairs it so every prompt names its class
    assert records and all(names_class(r.prompt, [r.class_name]) for r in records)
    assert {r.class_name for r in records} == {"cat", "red fox", "sailboat"}
    # ... and the prompts are the model's text, not a fallback to the bare class name
    assert all(r.source.startswith("llm:synclr") for r in records)
    assert all(r.prompt.strip().lower() != r.class_name for r in records)


def test_editing_the_caption_file_redoes_the_prompts(tmp_path: Path) -> None:
    captions = tmp_path / "captions.txt"
    captions.write_text(
        "a cat on a mat => cat\na red fox at dawn => red fox\na sailboat => sailboat\n"
    )
    recipe = make(tmp_path, {"strategy": "file", "file": str(captions)})
    run = open_run(recipe)
    assert stage_prompts(recipe, run)[0].prompt == "a cat on a mat"
    captions.write_text(
        "a cat in a hat => cat\na red fox at dawn => red fox\na sailboat => sailboat\n"
    )
    assert stage_prompts(recipe, run)[0].prompt == "a cat in a hat"


def test_too_few_distinct_prompts_are_said_or_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # one template, no slots: one distinct prompt per class where 4 were asked for
    recipe = make(tmp_path, {"template": "a photo of a {class}", "per_class": 4})
    with caplog.at_level("WARNING"):
        records = stage_prompts(recipe, open_run(recipe))
    assert len(records) == 3
    assert "only 1 distinct prompt for class 'cat' (per_class 4; 3 of 3 classes short)" in (
        caplog.text
    )
    report = json.loads(open_run(recipe).prompts_report.read_text())
    assert report["short_of_per_class"] == {"cat": 1, "red fox": 1, "sailboat": 1}
    caplog.clear()  # per_class left at its default: recorded, not said
    quiet = make(tmp_path / "quiet", {"template": "a {class}"})
    with caplog.at_level("WARNING"):
        stage_prompts(quiet, open_run(quiet))
    assert "distinct prompt" not in caplog.text
    assert json.loads(open_run(quiet).prompts_report.read_text())["short_of_per_class"]
    strict = make(
        tmp_path / "strict", {"template": "a {class}", "per_class": 4, "shortfall": "error"}
    )
    with pytest.raises(SynthsetError, match="only 1 distinct prompt for") as err:
        stage_prompts(strict, open_run(strict))
    assert "\n" not in str(err.value) and "prompts.shortfall: warn" in str(err.value)
