"""Recipe loading: defaults, overrides, and one-line errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from synthset.errors import SynthsetError
from synthset.recipe import apply_overrides, dump_recipe, load_recipe, recipe_from_dict

RECIPES = Path(__file__).resolve().parents[1] / "src" / "synthset" / "recipes"

MINIMAL = {
    "classes": {"names": ["cat", "dog"]},
    "generate": {"generator": {"kind": "text2image", "model": "x"}},
}


def write(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", sorted(p.stem for p in RECIPES.glob("*.yaml")))
def test_bundled_recipes_validate(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from synthset.pipeline import check

    recipe = load_recipe(RECIPES / f"{name}.yaml")
    if recipe.labels is not None and recipe.labels.detector is not None:
        monkeypatch.chdir(tmp_path)  # the user's detector weights, in place
        weights = tmp_path / recipe.labels.detector.weights
        weights.parent.mkdir(parents=True, exist_ok=True)
        weights.write_bytes(b"")
    check(recipe)  # every stage's fail-fast check (e.g. each tune space value) passes
    assert load_recipe(write(tmp_path, dump_recipe(recipe))) == recipe  # the dump round-trips
    # what the file says is what was loaded (no key dropped or defaulted over)
    written = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    dumped = recipe.model_dump(mode="json")
    for section, values in written.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if not isinstance(value, dict | list):
                    assert dumped[section][key] == value, f"{section}.{key}"


def test_defaults_and_dump_roundtrip(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, MINIMAL))
    assert recipe.generate.images_per_class == 100
    again = load_recipe(write(tmp_path, dump_recipe(recipe)))
    assert again == recipe


def test_set_overrides_parse_yaml_values(tmp_path: Path) -> None:
    recipe = load_recipe(
        write(tmp_path, MINIMAL),
        [
            "generate.images_per_class=7",
            "generate.generator.guidance_scale=3.5",
            "name=abc",
            "generate.generator.save_size=[32, 16]",
        ],
    )
    assert recipe.generate.images_per_class == 7
    assert recipe.generate.generator.guidance_scale == 3.5
    assert recipe.name == "abc"
    assert recipe.generate.generator.save_size == (32, 16)


def test_set_creates_missing_sections() -> None:
    data = apply_overrides({}, ["a.b.c=1"])
    assert data == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("noequals", "key.path=value"),
        ("name.x=1", "'name' is a value"),
    ],
)
def test_bad_set_syntax(tmp_path: Path, override: str, fragment: str) -> None:
    with pytest.raises(SynthsetError, match=fragment):
        load_recipe(write(tmp_path, {**MINIMAL, "name": "n"}), [override])


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        (
            {"generate": {"stepz": 3}},
            "generate.stepz: unknown key; allowed keys here: images_per_class",
        ),
        (
            {"generate": {"generator": {"kind": "text2image", "model": "m", "guidance": 1}}},
            "generate.generator.guidance: unknown key; allowed keys here: kind, model, steps",
        ),
        (
            {"generate": {"images_per_class": 0}},
            "generate.images_per_class: Input should be greater",
        ),
        ({"generate": {"generator": {"kind": "gan", "model": "m"}}}, "generate.generator.kind"),
        ({"generate": {"generator": {"kind": "text2image"}}}, "needs generator.model"),
        ({"classes": {}}, "give exactly one of names, file, imagefolder, dataset"),
        ({"classes": {"names": ["a"], "dataset": "digits"}}, "(got names, dataset)"),
        ({"prompts": {"template": "a photo"}}, "prompts.template: template must contain '{class}'"),
        ({"prompts": {"domain": "pets"}}, "domain is read by strategy 'metaprompt' only"),
        ({"adapt": {"steps": 5}}, "'adapt' trains on real images: add a 'real' section"),
        ({"real": {"source": "imagefolder"}}, "real: source 'imagefolder' needs 'path'"),
        ({"evaluate": {"train_sets": ["fake"]}}, "evaluate.train_sets.0"),
        ({"bogus": 1}, "bogus: unknown key; allowed keys here: name, seed, output_dir"),
        ({"seed": -3}, "seed: Input should be greater than or equal to 0 (got -3)"),
    ],
)
def test_bad_recipes_give_one_line_naming_the_field(
    tmp_path: Path, patch: dict, fragment: str
) -> None:
    data = {**MINIMAL, **patch}
    with pytest.raises(SynthsetError) as info:
        load_recipe(write(tmp_path, data))
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SynthsetError, match="not valid YAML"):
        load_recipe(write(tmp_path, "classes: [unclosed"))
    with pytest.raises(SynthsetError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(SynthsetError, match="top level must be a mapping"):
        load_recipe(write(tmp_path, "- a\n- b\n"))


def test_fingerprint_tracks_only_named_parts() -> None:
    a = recipe_from_dict(MINIMAL)
    b = recipe_from_dict({**MINIMAL, "name": "other", "prompts": {"template": "x {class}"}})
    assert a.fingerprint("classes", "generate") == b.fingerprint("classes", "generate")
    assert a.fingerprint("prompts") != b.fingerprint("prompts")
    c = recipe_from_dict({**MINIMAL, "seed": 1})
    assert a.fingerprint("classes") != c.fingerprint("classes")
