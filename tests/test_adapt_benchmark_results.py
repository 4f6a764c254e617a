"""The adapt benchmark's result files: runs of separate seeds and one-off variants merge into
one file without losing a seed's base time or the commands that made the rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from adapt_digits import _assignments, merge  # noqa: E402


def _row(synthetic: float) -> dict:
    return {"test_accuracy": {"synthetic": synthetic, "real": 0.99}, "adapt_s": 10.0}


def _result(path: Path, command: str, per_seed: dict) -> Path:
    path.write_text(json.dumps({"command": command, "settings": {"A": {"per_seed": per_seed}}}))
    return path


def test_merged_one_off_rows_keep_the_base_time_and_name_their_seeds(tmp_path: Path) -> None:
    first = _result(
        tmp_path / "a.json",
        "python benchmarks/adapt_digits.py --seeds 0 1",
        {
            "0": {"base_s": 700.0, "lora": _row(0.7)},
            "1": {"base_s": 650.0, "lora": _row(0.9) | {"label_fidelity": 0.95}},
        },
    )
    one_off = _result(
        tmp_path / "b.json",
        "python benchmarks/adapt_digits.py --seeds 0 --adapt-set steps=4000",
        {"0": {"base_s": 0.1, "lora (steps=4000)": _row(0.88)}},
    )
    out = tmp_path / "merged.json"
    merge([first, one_off], out)
    merged = json.loads(out.read_text())
    block = merged["settings"]["A"]
    assert block["per_seed"]["0"]["base_s"] == 700.0  # the reused base's 0.1 s does not win
    assert block["summary"]["lora"]["synthetic"] == {"mean": 0.8, "std": 0.1414}
    assert "seeds" not in block["summary"]["lora"]
    # a metric only the newer run recorded says which seeds it averages
    assert block["summary"]["lora"]["label_fidelity"] == {"mean": 0.95, "std": 0.0, "seeds": [1]}
    assert block["summary"]["lora (steps=4000)"]["seeds"] == [0]
    assert block["summary"]["lora (steps=4000)"]["synthetic"]["mean"] == 0.88
    assert merged["command"].split("; ") == [
        "python benchmarks/adapt_digits.py --seeds 0 1",
        "python benchmarks/adapt_digits.py --seeds 0 --adapt-set steps=4000",
    ]


def test_variant_settings_are_read_as_yaml_values() -> None:
    assert _assignments(["steps=4000", "lora_text_encoder=true", "init_word=digit"]) == {
        "steps": 4000,
        "lora_text_encoder": True,
        "init_word": "digit",
    }
