"""Bad or odd input at the edge: one-line errors (never a traceback), values taken as written,
user text printed as text, and no secret in any message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from synthset.errors import SynthsetError
from synthset.recipe import load_recipe, recipe_from_dict
from synthset.redaction import redact
from synthset.store.names import folder_names

DIGITS: dict[str, Any] = {"classes": {"dataset": "digits"}, "real": {"source": "digits"}}


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "300"}
    return subprocess.run(
        [sys.executable, "-m", "synthset.cli", *args],
        capture_output=True, text=True, env=env, timeout=300, cwd=cwd,
    )  # fmt: skip


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- --out and files


@pytest.mark.parametrize("name", ["run #2", "007", "no", "~"])
def test_out_is_a_path_taken_verbatim(tmp_path: Path, name: str) -> None:
    recipe = write(tmp_path / "r.yaml", DIGITS)
    res = cli("data", str(recipe), "--out", name, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / name / "real" / "splits.json").is_file()


def test_out_that_is_a_file_or_under_one_is_one_line(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.yaml", DIGITS)
    (tmp_path / "taken").write_text("a file")
    for out in (tmp_path / "taken", tmp_path / "taken" / "run"):
        assert "is a file or lies under one" in one_line_error(
            cli("data", str(recipe), "--out", str(out))
        )


def test_broken_yaml_is_one_line_with_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes:\n  dataset: digits\n  names: [a, b\nreal: {source: digits}\n")
    line = one_line_error(cli("validate", str(bad)))
    assert "not valid YAML" in line and "line " in line and "column " in line


def test_non_utf8_recipe_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("classes:\n  names: [café, thé]\n".encode("latin-1"))
    assert "not UTF-8" in one_line_error(cli("validate", str(bad)))


def test_huge_shard_count_is_one_line(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.yaml", DIGITS | {"output_dir": str(tmp_path / "run")})
    assert "at most" in one_line_error(cli("generate", str(recipe), "--shard", f"0/{10**40}"))


# ----------------------------------------------------------------------------- values


def test_off_unquoted_means_off(tmp_path: Path) -> None:
    text = (
        "classes: {names: [cat]}\n"
        "prompts:\n  label_check: off\n  strategy: synclr\n"
        "  llm: {model: m, base_url: 'http://127.0.0.1:9/v1', structured_output: off}\n"
    )
    (tmp_path / "r.yaml").write_text(text)
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.prompts.label_check == "off"
    assert recipe.prompts.llm is not None and recipe.prompts.llm.structured_output == "off"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (
            {
                "generate": {
                    "generator": {"kind": "text2image", "model": "m", "guidance_scale": "inf"}
                }
            },
            "generate.generator.guidance_scale: Input should be a finite number",
        ),
        ({"adapt": {"lr": float("nan")}}, "adapt.lr: Input should be a finite number"),
        ({"seed": 2**32}, "seed: Input should be less than or equal to 4294967295"),
        ({"classes": {"names": ["cat", "cat "]}}, "class name 'cat' appears twice"),
    ],
)
def test_values_that_would_fail_later_fail_at_the_edge(data: dict[str, Any], fragment: str) -> None:
    data = {"classes": {"names": ["cat", "dog"]}} | data
    with pytest.raises(SynthsetError) as err:
        recipe_from_dict(data)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_reserved_and_long_class_names_get_safe_folders() -> None:
    wide = "\U00020000" * 80  # a 4-byte UTF-8 letter: 320 bytes
    names = ["metadata.jsonl", "Images", "splits.json", "CON", wide, "cat"]
    folders = [f.split("_", 1)[1] for f in folder_names(names)]  # without the order prefix
    assert folders[:4] == ["metadata.jsonl_class", "Images_class", "splits.json_class", "CON_class"]
    assert len(folders[4].encode()) <= 200 and folders[4].startswith("\U00020000")
    assert folders[5] == "cat"


def test_a_class_named_like_the_index_does_not_clash_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.datasets import ImageFolder

    from synthset.generators.registry import GENERATORS
    from synthset.pipeline import run_all

    monkeypatch.setitem(GENERATORS.entries, "solid", "seam_fakes:SolidColorGenerator")
    names = ["metadata.jsonl", "images", "\U00020000" * 80]
    base = recipe_from_dict(
        {
            "output_dir": str(tmp_path / "run"),
            "classes": {"names": names},
            "generate": {"images_per_class": 3, "generator": {"kind": "tiny", "model": "m"}},
            "report": {"enabled": False},
        }
    )
    assert base.generate is not None
    gen = base.generate.model_copy(
        update={
            "generator": base.generate.generator.model_copy(update={"kind": "solid", "model": None})
        }
    )
    run = run_all(base.model_copy(update={"generate": gen}), progress=False)
    assert (run.images / "metadata.jsonl").is_file()
    assert len(ImageFolder(str(run.images))) == 9


# ----------------------------------------------------------------------------- text and secrets


def test_user_text_with_brackets_is_printed_as_text(tmp_path: Path) -> None:
    captions = tmp_path / "captions.txt"
    captions.write_text("a [/b] dog => cat\n[[caption, [label]]] => cat\n")
    recipe = write(
        tmp_path / "r.yaml",
        {
            "output_dir": str(tmp_path / "run"),
            "classes": {"names": ["cat"]},
            "prompts": {"strategy": "file", "file": str(captions), "per_class": 2},
            "generate": {"images_per_class": 2, "generator": {"kind": "tiny", "model": "m"}},
        },
    )
    res = cli("prompts", str(recipe), "--preview", "2")
    assert res.returncode == 0, res.stderr
    assert "a [/b] dog" in res.stdout and "[[caption, [label]]]" in res.stdout
    bad = write(tmp_path / "bad.yaml", {"classes": {"names": ["cat"]}, "[x]": 1})
    assert "recipe error at [x]: unknown key" in one_line_error(cli("validate", str(bad)))


@pytest.mark.parametrize(
    ("override", "secret"),
    [
        ("prompts.llm.api_key_env=sk-abcdefghijklmnopqrstuv", "sk-abcdefghijklmnopqrstuv"),
        ("prompts.llm.api_key_env=hf_AbCdEfGhIjKlMnOpQrSt", "hf_AbCdEfGhIjKlMnOpQrSt"),
        ("prompts.llm.base_url=http://me:hunter22@127.0.0.1:9/v1", "hunter22"),
        ("prompts.llm.base_url=https://llm.example/v1?api_key=topsecret", "topsecret"),
    ],
)
def test_a_secret_in_the_recipe_is_refused_and_never_echoed(
    tmp_path: Path, override: str, secret: str
) -> None:
    recipe = write(
        tmp_path / "r.yaml",
        {"classes": {"names": ["cat"]}, "prompts": {"strategy": "synclr", "llm": {"model": "m"}}},
    )
    line = one_line_error(cli("validate", str(recipe), "--set", override))
    assert "prompts.llm." in line and secret not in line
    assert not list(tmp_path.rglob("recipe.yaml"))  # nothing was saved


def test_redact_hides_keys_tokens_and_url_credentials_only() -> None:
    text = (
        "key sk-proj-abcdefghijkl, hf_AbCdEfGhIjKl, ghp_abcdefghijklmn at "
        "https://user:pw@host/v1?api_key=s3cret&x=1 with Authorization: Bearer abc.def.ghijk"
    )
    out = redact(text)
    for secret in ("sk-proj", "hf_AbC", "ghp_", "user:pw", "s3cret", "abc.def"):
        assert secret not in out
    assert "https://***@host/v1?api_key=***&x=1" in out
    plain = "max_tokens: 512; unknown key; allowed keys here: kind, model; a photo of a cat"
    assert redact(plain) == plain
