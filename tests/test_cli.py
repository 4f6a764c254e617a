"""The command line: bad input gives one line and exit status 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def synthset(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "synthset.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (
            {"classes": {"names": ["a"]}, "generate": {"generator": {"kind": "text2image"}}},
            "needs generator.model",
        ),
        (
            {
                "classes": {"dataset": "nope"},
                "generate": {"generator": {"kind": "text2image", "model": "m"}},
                "output_dir": "OUT",
            },
            "classes.dataset: unknown dataset 'nope'",
        ),
        (
            {
                "classes": {"names": ["a", "a"]},
                "generate": {"generator": {"kind": "text2image", "model": "m"}},
                "output_dir": "OUT",
            },
            "class name 'a' appears twice",
        ),
        (
            {
                "classes": {"names": ["a"]},
                "generate": {"generator": {"kind": "text2image", "model": "/does/not/exist"}},
                "output_dir": "OUT",
            },
            "/does/not/exist",
        ),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path: Path, data: dict, fragment: str) -> None:
    if data.get("output_dir") == "OUT":
        data["output_dir"] = str(tmp_path / "run")
    result = synthset("generate", str(write(tmp_path, data)), "-q")
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and fragment in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_unknown_key_names_path_and_allowed_keys(tmp_path: Path) -> None:
    recipe = write(tmp_path, {"classes": {"names": ["a"]}, "evaluat": {}})
    result = synthset("validate", str(recipe))
    assert result.returncode == 2
    assert "recipe error at evaluat: unknown key; allowed keys here:" in result.stderr
    assert "evaluate" in result.stderr


def test_validate_prints_resolved_recipe_with_overrides() -> None:
    result = synthset("validate", str(ROOT / "recipes" / "digits.yaml"), "--set", "seed=5")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["seed"] == 5
    assert resolved["generate"]["generator"]["kind"] == "tiny"


def test_bad_shard_is_one_line(tmp_path: Path) -> None:
    result = synthset(
        "generate",
        str(ROOT / "recipes" / "digits.yaml"),
        "--shard",
        "4/2",
        "--out",
        str(tmp_path / "run"),
    )
    assert result.returncode == 2
    assert "--shard '4/2'" in result.stderr and "Traceback" not in result.stderr


def test_shards_need_the_shared_stages_first(tmp_path: Path) -> None:
    result = synthset(
        "generate", str(ROOT / "recipes" / "digits.yaml"), "--shard", "0/2", "--out", str(tmp_path)
    )
    assert result.returncode == 2
    assert "run 'synthset plan'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "adapt").exists()
