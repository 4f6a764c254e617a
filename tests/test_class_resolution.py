"""Which class a folder on disk (or a dataset's class name) means: one resolver for the real
ImageFolder, a dataset's class names, ``evaluate.synthetic_dir`` and ``samples_from_imagefolder``;
and every class needs real train and test images, checked at the data stage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
import yaml
from PIL import Image

from synthset.data.splits import load_splits
from synthset.errors import SynthsetError
from synthset.evaluate.tensors import samples_from_imagefolder
from synthset.pipeline import open_run, stage_classes, stage_data
from synthset.recipe import Recipe, recipe_from_dict
from synthset.stages import synthetic_set
from synthset.store.run_folder import RunFolder


def write_pngs(folder: Path, n: int, value: int = 128) -> None:
    """``n`` small distinct PNGs in ``folder`` (created even when ``n`` is 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    for k in range(n):
        arr = np.clip(value + rng.normal(0, 10, (6, 6)), 0, 255).astype(np.uint8)
        Image.fromarray(arr, "L").save(folder / f"{k}.png")


def real_tree(root: Path, folders: list[str], train: int = 8, test: int = 3) -> Path:
    """``root/train/<folder>/`` and ``root/test/<folder>/`` with PNGs for every folder."""
    for f in folders:
        write_pngs(root / "train" / f, train)
        write_pngs(root / "test" / f, test)
    return root


def recipe(tmp_path: Path, names: list[str], real: dict[str, Any], **extra: Any) -> Recipe:
    return recipe_from_dict(
        {
            "output_dir": str(tmp_path / "run"),
            "classes": {"names": names},
            "real": real,
            **extra,
        }
    )


def labels_by_folder(run_real: Path) -> dict[str, set[int]]:
    """Labels of the data stage's splits, by the name of the folder each image sits in."""
    found: dict[str, set[int]] = {}
    for samples in load_splits(run_real / "splits.json").values():
        for path, label in samples:
            found.setdefault(path.parent.name, set()).add(label)
    return found


def one_line(exc: pytest.ExceptionInfo[SynthsetError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# Class names where one class's *name* is another class's safe folder in classes.json.
COLLIDING = [["a/b", "a_b"], ["x:y", "x_y", "z"]]


def classes_json_folders(r: Recipe, run: RunFolder) -> list[str]:
    """The folders classes.json gives, checked to hold a name-vs-folder collision."""
    folders = [c.folder for c in stage_classes(r, run)]
    names = [c.name for c in stage_classes(r, run)]
    assert any(n in folders and folders.index(n) != i for i, n in enumerate(names))
    return folders


@pytest.mark.parametrize("names", COLLIDING)
def test_real_imagefolder_folders_from_classes_json_keep_their_labels(
    tmp_path: Path, names: list[str]
) -> None:
    real = tmp_path / "real"
    r = recipe(tmp_path, names, {"source": "imagefolder", "path": str(real)})
    run = open_run(r)
    folders = classes_json_folders(r, run)
    real_tree(real, folders)
    stage_data(r, run)
    assert labels_by_folder(run.real) == {f: {i} for i, f in enumerate(folders)}


@pytest.mark.parametrize("names", COLLIDING)
def test_synthetic_dir_and_samples_from_imagefolder_read_folders_like_classes_json(
    tmp_path: Path, names: list[str]
) -> None:
    synthetic = tmp_path / "synthetic"
    r = recipe(
        tmp_path,
        names,
        {"source": "imagefolder", "path": str(tmp_path / "unused")},
        evaluate={"synthetic_dir": str(synthetic)},
    )
    run = open_run(r)
    folders = classes_json_folders(r, run)
    for f in folders:
        write_pngs(synthetic / f, 2)
    expected = {f: {i} for i, f in enumerate(folders)}
    for samples in (synthetic_set(r, run), samples_from_imagefolder(synthetic, names)):
        got: dict[str, set[int]] = {}
        for path, label in samples:
            got.setdefault(path.parent.name, set()).add(label)
        assert got == expected


def hf_dataset(path: Path, names: list[str], train: list[int], test: list[int]) -> Path:
    """A saved HF DatasetDict: ``train[k]`` / ``test[k]`` images of label k, all pixels 50k+20."""

    def split(counts: list[int]) -> datasets.Dataset:
        rows: dict[str, list[Any]] = {"image": [], "label": []}
        for label, n in enumerate(counts):
            for _ in range(n):
                rows["image"].append(Image.new("L", (6, 6), 50 * label + 20))
                rows["label"].append(label)
        features = datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
        )
        return datasets.Dataset.from_dict(rows, features=features)

    datasets.DatasetDict({"train": split(train), "test": split(test)}).save_to_disk(path)
    return path


def test_dataset_class_names_that_equal_another_class_folder_keep_their_class(
    tmp_path: Path,
) -> None:
    # the other direction: here the names in the data are class names, and 'a_b' is the name of
    # class 1 although it is class 0's folder
    names = ["a/b", "a_b"]
    src = hf_dataset(tmp_path / "ds", names, [8, 8], [3, 3])
    r = recipe(tmp_path, names, {"source": "hf", "path": str(src)})
    run = open_run(r)
    stage_data(r, run)
    for samples in load_splits(run.real / "splits.json").values():
        for path, label in samples:
            assert int(np.asarray(Image.open(path))[0, 0]) == 50 * label + 20
    # the same for a real ImageFolder whose folders are the class names themselves
    names = ["a:b", "a_b"]
    real = real_tree(tmp_path / "by_name", names)
    r = recipe(tmp_path / "n", names, {"source": "imagefolder", "path": str(real)})
    run = open_run(r)
    stage_data(r, run)
    assert labels_by_folder(run.real) == {"a:b": {0}, "a_b": {1}}


def test_folder_that_could_be_two_classes_is_a_one_line_error(tmp_path: Path) -> None:
    names = ["Cat", "cat", "dog"]  # 'CAT' is either class, ignoring case
    real = real_tree(tmp_path / "real", ["CAT", "dog"])
    r = recipe(tmp_path, names, {"source": "imagefolder", "path": str(real)})
    with pytest.raises(SynthsetError) as exc:
        stage_data(r, open_run(r))
    message = one_line(exc)
    assert "ambiguous" in message
    assert "'CAT'" in message and "'Cat'" in message and "'cat'" in message
    # a dataset's class name is matched by the same rule
    src = hf_dataset(tmp_path / "ds", ["CAT", "dog"], [8, 8], [3, 3])
    r = recipe(tmp_path / "h", ["Cat", "cat", "dog"], {"source": "hf", "path": str(src)})
    with pytest.raises(SynthsetError) as exc:
        stage_data(r, open_run(r))
    message = one_line(exc)
    assert "ambiguous" in message and "'CAT'" in message
    assert "'Cat'" in message and "'cat'" in message


def frog_empty(root: Path) -> str:
    real_tree(root, ["cat", "dog"])
    (root / "train" / "frog").mkdir()
    write_pngs(root / "test" / "frog", 3)
    return f"{root / 'train' / 'frog'}/"


def frog_only_in_test(root: Path) -> str:
    real_tree(root, ["cat", "dog"])
    write_pngs(root / "test" / "frog", 3)
    return f"{root / 'train' / 'frog'}/"


def frog_empty_class_folder(root: Path) -> str:
    for name in ("cat", "dog"):
        write_pngs(root / name, 12)
    (root / "frog").mkdir()
    return f"{root / 'frog'}/"


@pytest.mark.parametrize("layout", [frog_empty, frog_only_in_test, frog_empty_class_folder])
def test_class_without_real_train_images_fails_at_the_data_stage(
    tmp_path: Path, layout: Any
) -> None:
    folder = layout(tmp_path / "real")
    r = recipe(
        tmp_path, ["cat", "dog", "frog"], {"source": "imagefolder", "path": str(tmp_path / "real")}
    )
    run = open_run(r)
    with pytest.raises(SynthsetError) as exc:
        stage_data(r, run)
    message = one_line(exc)
    assert "class 'frog'" in message and "no train images" in message
    assert folder in message
    assert not (run.real / "splits.json").exists()


def test_class_without_real_test_images_fails_at_the_data_stage(tmp_path: Path) -> None:
    real = real_tree(tmp_path / "real", ["cat", "dog"])
    write_pngs(real / "train" / "frog", 8)
    r = recipe(tmp_path, ["cat", "dog", "frog"], {"source": "imagefolder", "path": str(real)})
    with pytest.raises(SynthsetError) as exc:
        stage_data(r, open_run(r))
    message = one_line(exc)
    assert "class 'frog'" in message and "no test images" in message
    assert f"{real / 'test' / 'frog'}/" in message
    # a dataset source whose test split lacks a class: the same error, naming the source
    src = hf_dataset(tmp_path / "ds", ["cat", "dog", "frog"], [8, 8, 8], [3, 3, 0])
    r = recipe(tmp_path / "h", ["cat", "dog", "frog"], {"source": "hf", "path": str(src)})
    with pytest.raises(SynthsetError) as exc:
        stage_data(r, open_run(r))
    message = one_line(exc)
    assert "class 'frog'" in message and "no test images" in message and str(src) in message


def run_cli_data(tmp_path: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "run"),
                "classes": {"names": names},
                "real": {"source": "imagefolder", "path": str(tmp_path / "real")},
            }
        )
    )
    return subprocess.run(
        [sys.executable, "-m", "synthset.cli", "data", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_one_line_errors_reach_the_cli(tmp_path: Path) -> None:
    frog_only_in_test(tmp_path / "a" / "real")
    real_tree(tmp_path / "b" / "real", ["CAT"])
    cases = [
        (run_cli_data(tmp_path / "a", ["cat", "dog", "frog"]), ["'frog'", "no train images"]),
        (run_cli_data(tmp_path / "b", ["Cat", "cat"]), ["'CAT'", "ambiguous"]),
    ]
    for done, words in cases:
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert all(w in lines[0] for w in words), lines[0]
