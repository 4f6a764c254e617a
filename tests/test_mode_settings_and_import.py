"""Settings a generator's kind ignores are refused (recipe and tune space, one line naming the
field), and caption-file import reports every bad line, records unknown labels in
prompts_report.json and reads captions_multiple_labeled (one label per caption only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from synthset.errors import SynthsetError
from synthset.pipeline import open_run, stage_prompts
from synthset.recipe import recipe_from_dict


def gen_recipe(tmp_path: Path, generator: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "output_dir": str(tmp_path / "run"),
        "classes": {"names": ["cat", "dog"]},
        "real": {"source": "imagefolder", "path": str(tmp_path / "real")},
        "generate": {"images_per_class": 2, "generator": {"model": "m"} | generator},
        **extra,
    }


def one_line_error(data: dict[str, Any]) -> str:
    with pytest.raises(SynthsetError) as err:
        recipe_from_dict(data)
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    "field, value",
    [
        ("strength", 0.5),
        ("strength", [0.3, 0.6]),
        ("variants_per_image", 2),
        ("mask", "box"),
        ("mask_box", [0.1, 0.1, 0.9, 0.9]),
        ("mask_dir", "masks"),
        ("invert_mask", True),
    ],
)
def test_text2image_refuses_settings_it_ignores(tmp_path: Path, field: str, value: Any) -> None:
    text = one_line_error(gen_recipe(tmp_path, {"kind": "text2image", field: value}))
    assert f"generate.generator.{field}" in text and "text2image ignores it" in text


def test_img2img_refuses_mask_settings(tmp_path: Path) -> None:
    gen = {"kind": "img2img", "strength": 0.5, "mask": "box", "mask_box": [0, 0, 1, 1]}
    text = one_line_error(gen_recipe(tmp_path, gen))
    assert "generate.generator.mask" in text and "img2img ignores it" in text
    assert "inpaint" in text


def test_ensemble_members_refuse_settings_their_kind_ignores(tmp_path: Path) -> None:
    data = gen_recipe(tmp_path, {})
    data["generate"] = {
        "images_per_class": 2,
        "generators": [
            {"name": "a", "kind": "text2image", "model": "m"},
            {"name": "b", "kind": "text2image", "model": "m", "strength": 0.4},
        ],
    }
    text = one_line_error(data)
    assert "generate.generators.1.strength" in text and "text2image ignores it" in text


def test_settings_the_kind_uses_are_accepted(tmp_path: Path) -> None:
    r = recipe_from_dict(
        gen_recipe(tmp_path, {"kind": "img2img", "strength": [0.3, 0.6], "variants_per_image": 3})
    )
    assert r.generate is not None and r.generate.generator.strengths == [0.3, 0.6]
    inpaint = {"kind": "inpaint", "strength": 0.8, "mask": "box", "mask_box": [0, 0, 0.5, 0.5]}
    assert recipe_from_dict(gen_recipe(tmp_path, inpaint)).generate is not None
    tiny = {"kind": "tiny", "strength": 0.5, "variants_per_image": 2}
    assert recipe_from_dict(gen_recipe(tmp_path, tiny)).generate is not None
    # defaults written back out (a dumped recipe) are not "set"
    r2 = recipe_from_dict(gen_recipe(tmp_path, {"kind": "text2image"}))
    assert recipe_from_dict(r2.model_dump(mode="json")) == r2


def test_tiny_variants_need_strength(tmp_path: Path) -> None:
    text = one_line_error(gen_recipe(tmp_path, {"kind": "tiny", "variants_per_image": 2}))
    assert "generate.generator.variants_per_image" in text and "strength" in text


def test_tune_space_over_a_field_the_kind_ignores(tmp_path: Path) -> None:
    data = gen_recipe(
        tmp_path,
        {"kind": "text2image"},
        tune={"space": {"generate.generator.strength": {"low": 0.2, "high": 0.8}}},
    )
    text = one_line_error(data)
    assert "generate.generator.strength" in text and "text2image ignores it" in text
    data["tune"] = {"space": {"generate.generator.steps": {"choices": [5, 10]}}}
    assert recipe_from_dict(data).tune is not None


# ----------------------------------------------------------------------------- import


def prompts_recipe(tmp_path: Path, captions: Path) -> Any:
    return recipe_from_dict(
        {
            "output_dir": str(tmp_path / "run"),
            "classes": {"names": ["cat", "dog"]},
            "prompts": {"strategy": "file", "file": str(captions), "per_class": 1},
            "generate": {"images_per_class": 2, "generator": {"kind": "text2image", "model": "m"}},
        }
    )


def test_every_bad_caption_line_is_reported_in_one_line(tmp_path: Path) -> None:
    captions = tmp_path / "captions.txt"
    lines = ["a cat => cat"] * 12
    lines[3] = "a cat without a label"
    lines[8] = "another one"
    lines[11] = "a dog =>"
    captions.write_text("\n".join(lines) + "\n", encoding="utf-8")
    recipe = prompts_recipe(tmp_path, captions)
    with pytest.raises(SynthsetError) as err:
        stage_prompts(recipe, open_run(recipe))
    text = str(err.value)
    assert "\n" not in text and "3 bad lines" in text
    assert "4, 9" in text and "12" in text and "captions.txt" in text


def test_every_bad_json_entry_is_reported(tmp_path: Path) -> None:
    captions = tmp_path / "captions.json"
    entries = [["a cat", ["cat"]], ["a dog", "dog"], ["a cat", ["cat"]], [3, ["dog"]]]
    captions.write_text(json.dumps({"captions_single_labeled": entries}), encoding="utf-8")
    recipe = prompts_recipe(tmp_path, captions)
    with pytest.raises(SynthsetError) as err:
        stage_prompts(recipe, open_run(recipe))
    text = str(err.value)
    assert "\n" not in text and "2 bad entries" in text and "1, 3" in text


def test_unknown_labels_are_recorded_in_the_report(tmp_path: Path) -> None:
    captions = tmp_path / "captions.txt"
    captions.write_text(
        "a cat on a sofa => cat\na dog in a park => dog\na zebra at a river => zebra\n",
        encoding="utf-8",
    )
    recipe = prompts_recipe(tmp_path, captions)
    run = open_run(recipe)
    stage_prompts(recipe, run)
    report = json.loads(run.prompts_report.read_text())
    imported = report["strategy_report"]
    assert imported["unmatched"] == 1 and imported["unmatched_labels"] == {"zebra": 1}
    assert imported["unmatched_captions"] == [
        {"where": "line 3", "caption": "a zebra at a river", "label": "zebra"}
    ]


def test_captions_multiple_labeled_one_label_each_is_imported(tmp_path: Path) -> None:
    captions = tmp_path / "captions.json"
    data = {"captions_multiple_labeled": [["a cat on a mat", ["cat"]], ["a dog barking", [1]]]}
    captions.write_text(json.dumps(data), encoding="utf-8")
    recipe = prompts_recipe(tmp_path, captions)
    records = stage_prompts(recipe, open_run(recipe))
    assert sorted((r.prompt, r.class_name) for r in records) == [
        ("a cat on a mat", "cat"),
        ("a dog barking", "dog"),
    ]


def test_captions_multiple_labeled_with_several_labels_is_refused(tmp_path: Path) -> None:
    captions = tmp_path / "captions.json"
    data = {
        "captions_multiple_labeled": [
            ["a cat on a mat", ["cat"]],
            ["a cat and a dog", ["cat", "dog"]],
            ["a dog and a ball", ["dog", "ball"]],
        ]
    }
    captions.write_text(json.dumps(data), encoding="utf-8")
    recipe = prompts_recipe(tmp_path, captions)
    with pytest.raises(SynthsetError) as err:
        stage_prompts(recipe, open_run(recipe))
    text = str(err.value)
    assert "\n" not in text and "captions_multiple_labeled" in text
    assert "2 bad entries" in text and "1, 2" in text and "several labels" in text
