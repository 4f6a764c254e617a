"""Real data from HF datasets (save_to_disk folders, local parquet) and torchvision datasets
(files already on disk, download=False), materialized into the run's ImageFolder; a real test
split is required; bad input gives one-line errors."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
from PIL import Image

from synthset.classes import ClassInfo, resolve_classes
from synthset.data.real import prepare_real_data
from synthset.errors import SynthsetError
from synthset.recipe import ClassesSpec, RealDataSpec, recipe_from_dict

NAMES = ["cat", "dog", "fox"]
PER_CLASS = 8


def classes(names: list[str] = NAMES) -> list[ClassInfo]:
    return resolve_classes(ClassesSpec(names=names))


def pixels(label: int, k: int, size: int = 6) -> np.ndarray:
    """A distinct RGB image per (label, k)."""
    rng = np.random.default_rng(100 * label + k)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def hf_split(n_per_class: int, offset: int = 0, string_labels: bool = False) -> datasets.Dataset:
    rows: dict[str, list[Any]] = {"image": [], "label": []}
    for k in range(n_per_class):
        for c in range(len(NAMES)):
            rows["image"].append(Image.fromarray(pixels(c, k + offset)))
            rows["label"].append(NAMES[c] if string_labels else c)
    label = datasets.Value("string") if string_labels else datasets.ClassLabel(names=NAMES)
    features = datasets.Features({"image": datasets.Image(), "label": label})
    return datasets.Dataset.from_dict(rows, features=features)


def spec(**kw: Any) -> RealDataSpec:
    return RealDataSpec(**kw)


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_hf_saved_dataset_with_test_split(tmp_path: Path) -> None:
    src = tmp_path / "ds"
    datasets.DatasetDict(
        {"train": hf_split(PER_CLASS), "test": hf_split(3, offset=50)}
    ).save_to_disk(src)
    out = tmp_path / "real"
    splits = prepare_real_data(spec(source="hf", path=src), classes(), out, seed=0)
    # the source's test split is the test split, untouched; val is carved from train only
    assert len(splits["test"]) == 3 * 3
    assert all(p.name.startswith("test-") for p, _ in splits["test"])
    assert all(p.name.startswith("train-") for p, _ in splits["train"] + splits["val"])
    assert len(splits["train"]) + len(splits["val"]) == 3 * PER_CLASS
    assert {lbl for _, lbl in splits["val"]} == {0, 1, 2}
    assert not {p for p, _ in splits["train"]} & {p for p, _ in splits["val"]}
    # images are materialized as an ImageFolder with the right pixels and class folders
    for path, label in splits["test"]:
        assert path.parent == out / "test" / NAMES[label]
        index = int(path.stem.split("-")[1])
        assert label == index % 3
        assert np.array_equal(read(path), pixels(index % 3, 50 + index // 3))


def test_hf_without_test_split_carves_one_or_says_it_is_required(tmp_path: Path) -> None:
    src = tmp_path / "ds"
    hf_split(PER_CLASS).save_to_disk(src)  # a single Dataset: train only
    splits = prepare_real_data(
        spec(source="hf", path=src, test_fraction=0.25), classes(), tmp_path / "a", seed=0
    )
    assert len(splits["test"]) == 6 and len(splits["val"]) >= 3
    assert sum(len(s) for s in splits.values()) == 3 * PER_CLASS
    with pytest.raises(SynthsetError) as err:
        prepare_real_data(
            spec(source="hf", path=src, test_fraction=0), classes(), tmp_path / "b", seed=0
        )
    msg = str(err.value)
    assert "\n" not in msg and "no test split" in msg and "test_fraction" in msg


def test_hf_local_parquet_folder_with_string_labels(tmp_path: Path) -> None:
    data = tmp_path / "pq"
    data.mkdir()
    hf_split(PER_CLASS, string_labels=True).to_parquet(str(data / "train.parquet"))
    hf_split(2, offset=30, string_labels=True).to_parquet(str(data / "test.parquet"))
    # the recipe lists the classes in another order: labels are matched by name
    names = ["fox", "cat", "dog"]
    splits = prepare_real_data(
        spec(source="hf", path=data, max_per_class=5), classes(names), tmp_path / "real", seed=0
    )
    assert len(splits["train"]) + len(splits["val"]) == 3 * 5  # max_per_class
    folders = [c.folder for c in classes(names)]  # "0_fox", ...: folders sort in class order
    for path, label in splits["test"]:
        assert path.parent.name == folders[label] and folders[label].endswith(names[label])
        index = int(path.stem.split("-")[1])
        assert np.array_equal(read(path), pixels(NAMES.index(names[label]), 30 + index // 3))


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"label_column": "y"}, "real.label_column: hf dataset"),
        ({"image_column": "img"}, "has no column 'img'"),
        ({"splits": {"train": "train", "test": "holdout"}}, "real.splits.test"),
        ({"path": "no/such-dataset"}, "cannot load the HF dataset"),
    ],
)
def test_hf_bad_input_is_one_line(tmp_path: Path, kw: dict[str, Any], fragment: str) -> None:
    src = tmp_path / "ds"
    datasets.DatasetDict({"train": hf_split(4), "test": hf_split(2)}).save_to_disk(src)
    with pytest.raises(SynthsetError) as err:
        real = spec(**({"source": "hf", "path": src} | kw))
        prepare_real_data(real, classes(), tmp_path / "real", seed=0)
    assert "\n" not in str(err.value) and fragment in str(err.value)


def test_hf_class_names_must_match(tmp_path: Path) -> None:
    src = tmp_path / "ds"
    hf_split(4).save_to_disk(src)
    with pytest.raises(SynthsetError, match=r"class 'fox' of hf dataset .* real.labels: index"):
        prepare_real_data(
            spec(source="hf", path=src), classes(["cat", "dog", "wolf"]), tmp_path / "r", seed=0
        )


# ----------------------------------------------------------------------------- torchvision


def write_idx(path: Path, array: np.ndarray) -> None:
    """An MNIST-format (IDX, big endian) uint8 file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def mnist_files(root: Path, n_train: int = 40, n_test: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    made = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        write_idx(root / "MNIST" / "raw" / f"{prefix}-images-idx3-ubyte", images)
        write_idx(root / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte", labels)
        made[prefix] = images
    return made


def test_torchvision_mnist_from_local_files(tmp_path: Path) -> None:
    made = mnist_files(tmp_path / "tv")
    digits = resolve_classes(ClassesSpec(dataset="digits"))
    real = spec(source="torchvision", name="MNIST", root=tmp_path / "tv", labels="index")
    splits = prepare_real_data(real, digits, tmp_path / "real", seed=0)
    assert len(splits["test"]) == 20 and len(splits["train"]) + len(splits["val"]) == 40
    for path, label in splits["test"]:
        index = int(path.stem.split("-")[1])
        assert path.name.startswith("test-") and label == index % 10
        assert np.array_equal(read(path), made["t10k"][index])
    # MNIST's own names ("0 - zero", ...) are not the recipe's: matching by name says how to fix
    with pytest.raises(SynthsetError, match="real.labels: index"):
        prepare_real_data(
            spec(source="torchvision", name="MNIST", root=tmp_path / "tv"),
            digits,
            tmp_path / "real2",
            seed=0,
        )


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"name": "MNIST"}, "real.root: torchvision MNIST train files not found under"),
        ({"name": "CIFAR10"}, "real.root: torchvision CIFAR10 train files not found under"),
        ({"name": "NotADataset"}, "real.name: 'NotADataset' is not a torchvision dataset"),
        ({"name": "MNIST", "splits": {"train": "extra"}}, "only the splits train and test"),
    ],
)
def test_torchvision_bad_input_is_one_line(
    tmp_path: Path, kw: dict[str, Any], fragment: str
) -> None:
    real = spec(**({"source": "torchvision", "root": tmp_path / "empty"} | kw))
    digits = resolve_classes(ClassesSpec(dataset="digits"))
    with pytest.raises(SynthsetError) as err:
        prepare_real_data(real, digits, tmp_path / "real", seed=0)
    assert "\n" not in str(err.value) and fragment in str(err.value)
    assert not (tmp_path / "empty").exists()  # nothing was downloaded


def test_recipe_checks_source_fields_and_test_fraction(tmp_path: Path) -> None:
    base = {"classes": {"dataset": "digits"}}
    with pytest.raises(SynthsetError, match="real: source 'torchvision' needs 'name'"):
        recipe_from_dict(base | {"real": {"source": "torchvision", "root": "x"}})
    with pytest.raises(SynthsetError, match="real: source 'hf' needs 'path'"):
        recipe_from_dict(base | {"real": {"source": "hf"}})
    with pytest.raises(SynthsetError, match="real test split is required"):
        prepare_real_data(
            RealDataSpec(test_fraction=0),
            resolve_classes(ClassesSpec(dataset="digits")),
            tmp_path / "real",
            seed=0,
        )


def test_hf_source_through_the_data_stage_and_cas(tmp_path: Path) -> None:
    from synthset.data.splits import load_splits
    from synthset.evaluate.cas import run_cas
    from synthset.pipeline import open_run, stage_data

    src = tmp_path / "ds"
    datasets.DatasetDict(
        {"train": hf_split(PER_CLASS), "test": hf_split(3, offset=50)}
    ).save_to_disk(src)
    recipe = recipe_from_dict(
        {
            "output_dir": str(tmp_path / "run"),
            "classes": {"names": NAMES},
            "real": {"source": "hf", "path": str(src)},
            "evaluate": {"train_sets": ["real"], "epochs": 1, "device": "cpu"},
        }
    )
    run = open_run(recipe)
    assert stage_data(recipe, run) is True
    assert stage_data(recipe, run) is False  # done: the rerun is skipped
    splits = load_splits(run.real / "splits.json")
    assert all(p.is_file() and run.real in p.parents for s in splits.values() for p, _ in s)
    assert recipe.evaluate is not None
    result = run_cas(recipe.evaluate, splits, [], NAMES, run.evaluate, progress=False)
    assert result["config"]["n_test"] == 9 and result["config"]["channels"] == 3
