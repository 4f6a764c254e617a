"""CAS on any real / synthetic ImageFolder pair through a recipe (no generation needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import SHAPE_NAMES, make_samples, shape_pattern

from synthset.errors import SynthsetError
from synthset.pipeline import run_all
from synthset.recipe import recipe_from_dict


def make_folder(root: Path, per_class: int, seed: int) -> Path:
    """An ImageFolder of 12×12 RGB ``shape_pattern`` images at ``root``."""
    make_samples(root, per_class, seed, size=12, draw=shape_pattern, names=SHAPE_NAMES)
    return root


def recipe_for(tmp_path: Path, **evaluate: object):
    real = tmp_path / "real"
    make_folder(real / "train", 20, 0)
    make_folder(real / "test", 10, 1)
    synthetic = make_folder(tmp_path / "synthetic", 20, 2)
    return recipe_from_dict(
        {
            "output_dir": str(tmp_path / "run"),
            "classes": {"imagefolder": str(real / "train")},
            "real": {"source": "imagefolder", "path": str(real)},
            "evaluate": {
                "synthetic_dir": str(synthetic),
                "epochs": 4,
                "batch_size": 16,
                **evaluate,
            },
        }
    )


def decoded_cache_files(run) -> int:
    return len(list((run.cache / "tensors").glob("*.npy")))


def test_imagefolder_pair_is_scored_without_generation(tmp_path: Path) -> None:
    run = run_all(recipe_for(tmp_path), progress=False)
    cas = json.loads((run.evaluate / "cas.json").read_text())["train_sets"]
    assert cas["synthetic"]["summary"]["n_train"] == 60
    # val is carved out of real train (no val/ folder): 20 per class minus the val share
    assert cas["real"]["summary"]["n_train"] < 60
    assert cas["synthetic"]["summary"]["test_accuracy_mean"] > 0.9
    assert not run.images.exists()
    assert run.report.exists()
    # the default JSONL tracker logged every epoch of every (train set, seed)
    rows = [json.loads(line) for line in (run.evaluate / "metrics.jsonl").read_text().splitlines()]
    per_prefix: dict[str, int] = {}
    for row in rows:
        per_prefix[row["prefix"]] = per_prefix.get(row["prefix"], 0) + 1
    histories = {
        f"{name}/seed{r['seed']}": len(r["val_accuracy_history"])
        for name, res in cas.items()
        for r in res["runs"]
    }
    assert per_prefix == histories
    assert decoded_cache_files(run) >= 3  # real val, real test, synthetic, ...


def test_synthetic_folder_with_unknown_class_is_one_line_error(tmp_path: Path) -> None:
    recipe = recipe_for(tmp_path)
    (recipe.evaluate.synthetic_dir / "zebras").mkdir()
    with pytest.raises(
        SynthsetError, match="folder 'zebras' .* is not one of the recipe's classes"
    ):
        run_all(recipe, progress=False)


def test_real_folder_without_test_split_is_one_line_error(tmp_path: Path) -> None:
    recipe = recipe_for(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "real" / "test")
    with pytest.raises(SynthsetError, match="a real test split is required"):
        run_all(recipe, progress=False)
