"""CAS harness: decode-once tensors, classifiers by name, training with val-only model selection."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import NAMES, cas_spec, make_samples, real_splits
from PIL import Image

from synthset.data.splits import Samples
from synthset.errors import SynthsetError
from synthset.evaluate.cas import run_cas
from synthset.evaluate.classifiers import SmallCNN, build_classifier
from synthset.evaluate.tensors import (
    infer_format,
    load_tensors,
    samples_from_imagefolder,
)
from synthset.evaluate.train import random_shift
from synthset.recipe import EvaluateSpec
from synthset.store.imagefolder import read_samples


@pytest.fixture()
def real(tmp_path: Path) -> dict[str, Samples]:
    return real_splits(tmp_path, train=12, val=6, test=8)


def test_separable_data_scores_high_and_writes_json_and_csv(
    tmp_path: Path, real: dict[str, Samples]
) -> None:
    synthetic = make_samples(tmp_path / "syn", 12, 3)
    out = tmp_path / "eval"
    result = run_cas(cas_spec(seeds=[0, 1], epochs=12), real, synthetic, NAMES, out, progress=False)

    assert result["config"]["image_size"] == 8 and result["config"]["channels"] == 1
    for name, n_train in (("real", 36), ("synthetic", 36), ("real+synthetic", 72)):
        res = result["train_sets"][name]
        assert [r["seed"] for r in res["runs"]] == [0, 1]
        assert res["summary"]["n_train"] == n_train
        assert res["summary"]["test_accuracy_mean"] >= 0.9, (name, res["summary"])
        run = res["runs"][0]
        assert len(run["val_accuracy_history"]) == 12
        assert run["best_val_accuracy"] == max(run["val_accuracy_history"])
        keys = list(zip(run["val_accuracy_history"], run["val_loss_history"], strict=True))
        assert run["best_epoch"] == max(range(len(keys)), key=lambda e: (keys[e][0], -keys[e][1]))
        cm = np.array(run["confusion_matrix"])
        assert cm.shape == (3, 3) and cm.sum() == 24
        assert np.trace(cm) / 24 == pytest.approx(run["test_accuracy"])
        assert len(run["per_class_accuracy"]) == 3

    assert json.loads((out / "cas.json").read_text()) == result
    rows = list(csv.DictReader((out / "cas.csv").open()))
    assert [(r["train_set"], r["seed"]) for r in rows] == [
        (s, str(seed)) for s in ("real", "synthetic", "real+synthetic") for seed in (0, 1)
    ]
    assert set(rows[0]) == {
        "train_set",
        "seed",
        "test_accuracy",
        "test_balanced_accuracy",
        "test_top5_accuracy",
        "ood_test_accuracy",
        "best_val_accuracy",
        "n_train",
    }
    assert rows[0]["test_top5_accuracy"] == ""  # 3 classes: no top-5


def test_random_labels_score_near_chance(tmp_path: Path, real: dict[str, Samples]) -> None:
    """Labels independent of the images (each pattern gets every label equally often) teach
    nothing: CAS stays near chance (1/3), while the same images with true labels score high."""
    rng = np.random.default_rng(5)
    synthetic = make_samples(tmp_path / "syn", 12, 3)
    labels = np.concatenate([rng.permutation(np.arange(12) % 3) for _ in NAMES])
    shuffled = [(p, int(lbl)) for (p, _), lbl in zip(synthetic, labels, strict=True)]
    s = cas_spec(train_sets=["synthetic"], seeds=[0, 1, 2], epochs=12)
    noise = run_cas(s, real, shuffled, NAMES, tmp_path / "e", progress=False)
    true = run_cas(s, real, synthetic, NAMES, tmp_path / "f", progress=False)
    noise_acc = noise["train_sets"]["synthetic"]["summary"]["test_accuracy_mean"]
    true_acc = true["train_sets"]["synthetic"]["summary"]["test_accuracy_mean"]
    assert noise_acc < 0.7 and true_acc >= 0.9


def test_runs_are_reproducible(tmp_path: Path, real: dict[str, Samples]) -> None:
    a = run_cas(cas_spec(train_sets=["real"], epochs=3), real, [], NAMES, tmp_path / "a", False)
    b = run_cas(cas_spec(train_sets=["real"], epochs=3), real, [], NAMES, tmp_path / "b", False)
    ra, rb = a["train_sets"]["real"]["runs"][0], b["train_sets"]["real"]["runs"][0]
    assert ra["val_accuracy_history"] == rb["val_accuracy_history"]
    assert ra["confusion_matrix"] == rb["confusion_matrix"]


def test_test_split_is_scored_once_with_the_best_val_weights(tmp_path: Path) -> None:
    """Val holds the test images with rotated labels, so val and test disagree on which epoch is
    best. A real forward hook records every forward pass of the classifier: the test split must
    be seen exactly once, after all val passes, by the weights of the best val epoch."""
    test = make_samples(tmp_path / "test", 5, 2)  # 15 images
    val = [(p, (lbl + 1) % 3) for p, lbl in test]  # same images, wrong labels
    real = {"train": make_samples(tmp_path / "train", 10, 0), "val": val, "test": test}
    epochs = 8
    calls: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if isinstance(module, SmallCNN) and args[0].shape[0] == len(test):
            calls.append(output.detach().clone())

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        result = run_cas(
            cas_spec(train_sets=["real"], epochs=epochs, batch_size=8),
            real,
            [],
            NAMES,
            tmp_path / "e",
            progress=False,
        )
    finally:
        handle.remove()

    run = result["train_sets"]["real"]["runs"][0]
    assert len(calls) == epochs + 1  # one val pass per epoch, then the test pass, once
    val_passes, test_pass = calls[:epochs], calls[epochs]
    labels = torch.tensor([lbl for _, lbl in test])
    val_labels = torch.tensor([lbl for _, lbl in val])
    history = [float((v.argmax(1) == val_labels).float().mean()) for v in val_passes]
    assert history == pytest.approx(run["val_accuracy_history"])
    losses = [float(torch.nn.functional.cross_entropy(v, val_labels)) for v in val_passes]
    assert losses == pytest.approx(run["val_loss_history"], rel=1e-4)
    chosen = max(range(epochs), key=lambda e: (history[e], -losses[e]))
    assert run["best_epoch"] == chosen
    # the test pass ran the best-val weights, not the last epoch's
    assert torch.allclose(test_pass, val_passes[run["best_epoch"]], atol=1e-5)
    assert float((test_pass.argmax(1) == labels).float().mean()) == pytest.approx(
        run["test_accuracy"]
    )
    # the val labels are wrong, so the chosen weights are worse on test than the last ones
    last_test_acc = float((val_passes[-1].argmax(1) == labels).float().mean())
    assert run["test_accuracy"] < last_test_acc


def test_bad_inputs_are_one_line_errors(tmp_path: Path, real: dict[str, Samples]) -> None:
    out = tmp_path / "e"
    with pytest.raises(SynthsetError, match="'synthetic' has no data"):
        run_cas(cas_spec(train_sets=["synthetic"]), real, [], NAMES, out, False)
    with pytest.raises(SynthsetError, match="'real\\+synthetic' has no data"):
        run_cas(cas_spec(train_sets=["real+synthetic"]), real, [], NAMES, out, False)
    bad = [(p, 7 if i == 0 else lbl) for i, (p, lbl) in enumerate(real["train"])]
    with pytest.raises(SynthsetError, match="label 7 is outside 0..2"):
        run_cas(cas_spec(train_sets=["synthetic"]), real, bad, NAMES, out, False)
    with pytest.raises(SynthsetError, match="unknown classifier 'resnet9000'"):
        run_cas(cas_spec(classifier="resnet9000"), real, [], NAMES, out, False)
    with pytest.raises(SynthsetError, match="real test split is empty"):
        run_cas(cas_spec(), real | {"test": []}, [], NAMES, out, False)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(SynthsetError, match="cannot read image .*broken.png"):
        run_cas(cas_spec(train_sets=["synthetic"]), real, [(broken, 0)], NAMES, out, False)
    missing = [(tmp_path / "nope.png", 0)]
    with pytest.raises(SynthsetError, match="not found"):
        run_cas(cas_spec(train_sets=["synthetic"]), real, missing, NAMES, out, False)
    assert not (out / "cas.json").exists()


def test_timm_missing_says_how_to_install() -> None:
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(SynthsetError, match="pip install timm"):
            build_classifier("timm:resnet18", 3, 1, 16)
    else:
        model = build_classifier("timm:resnet18", 3, 1, 32)
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 3)


@pytest.mark.parametrize("size,channels", [(8, 1), (16, 3), (64, 3)])
def test_small_cnn_sizes(size: int, channels: int) -> None:
    model = build_classifier("small_cnn", 5, channels, size)
    assert model(torch.zeros(2, channels, size, size)).shape == (2, 5)


def test_torchvision_resnet18_on_tiny_images(tmp_path: Path) -> None:
    model = build_classifier("resnet18", 3, 1, 16)
    assert model.conv1.in_channels == 1 and model.conv1.stride == (1, 1)
    real = {
        "train": make_samples(tmp_path / "train", 4, 0, size=16),
        "val": make_samples(tmp_path / "val", 2, 1, size=16),
        "test": make_samples(tmp_path / "test", 2, 2, size=16),
    }
    result = run_cas(
        cas_spec(train_sets=["real"], classifier="resnet18", epochs=1),
        real,
        [],
        NAMES,
        tmp_path / "e",
        False,
    )
    run = result["train_sets"]["real"]["runs"][0]
    assert result["config"]["classifier"] == "resnet18"
    matrix = np.array(run["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == 6 and (matrix.sum(axis=1) == 2).all()
    # the reported accuracy is the matrix's, and the model was trained and validated once
    assert run["test_accuracy"] == pytest.approx(np.trace(matrix) / 6)
    assert len(run["val_accuracy_history"]) == 1


def test_torchvision_model_too_deep_for_tiny_images_is_explained() -> None:
    with pytest.raises(SynthsetError, match="does not run on 8×8 images"):
        build_classifier("vgg11", 3, 1, 8)


def test_tensors_decode_resize_and_convert(tmp_path: Path) -> None:
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.full((10, 20, 3), 90, np.uint8), "RGB").save(rgb)
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((8, 8), 200, np.uint8), "L").save(gray)
    assert infer_format([(rgb, 0)]) == (20, 3)
    assert infer_format([(gray, 0)]) == (8, 1)
    data = load_tensors([(rgb, 0), (gray, 1)], 12, 1, "x")
    assert data.images.dtype == torch.uint8 and data.images.shape == (2, 1, 12, 12)
    assert data.labels.tolist() == [0, 1]
    assert int(data.images[1].float().mean()) == 200
    assert load_tensors([(gray, 0)], 8, 3, "x").images.shape == (1, 3, 8, 8)
    with pytest.raises(SynthsetError, match="empty"):
        load_tensors([], 8, 1, "x")


def test_random_shift_moves_pixels_without_losing_them() -> None:
    img = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    img[:, :, 3:5, 3:5] = 255  # a blob away from the border survives any 1-pixel shift
    gen = torch.Generator().manual_seed(0)
    out = random_shift(img, 1, gen)
    assert out.shape == img.shape and out.dtype == torch.uint8
    assert (out.float().sum((1, 2, 3)) == img.float().sum((1, 2, 3))).all()
    shifts = {
        tuple(torch.nonzero(o[0])[0].tolist()) for o in random_shift(img.repeat(8, 1, 1, 1), 1, gen)
    }
    assert len(shifts) > 1  # different images get different offsets


def test_samples_from_imagefolder_and_metadata(tmp_path: Path) -> None:
    make_samples(tmp_path / "folder", 2, 0)
    samples = samples_from_imagefolder(tmp_path / "folder", NAMES)
    assert sorted(lbl for _, lbl in samples) == [0, 0, 1, 1, 2, 2]
    assert all(p.parent.name == NAMES[lbl] for p, lbl in samples)
    (tmp_path / "folder" / "metadata.jsonl").write_text(
        '{"file_name": "checker/0.png", "label": 2}\n{"file_name": "stripes/1.png", "label": 0}\n'
    )
    assert read_samples(tmp_path / "folder") == [
        (tmp_path / "folder" / "checker/0.png", 2),
        (tmp_path / "folder" / "stripes/1.png", 0),
    ]


def test_digits_real_baseline(tmp_path: Path) -> None:
    """The bundled digits: small_cnn trained on real train scores ≥ 0.95 on real test."""
    from synthset.classes import resolve_classes
    from synthset.data.real import prepare_real_data
    from synthset.recipe import ClassesSpec, RealDataSpec

    classes = resolve_classes(ClassesSpec(dataset="digits"))
    splits = prepare_real_data(RealDataSpec(), classes, tmp_path / "real", seed=0)
    result = run_cas(
        EvaluateSpec(train_sets=["real"], epochs=8, device="cpu"),
        splits,
        [],
        [c.name for c in classes],
        tmp_path / "e",
        progress=False,
    )
    assert result["train_sets"]["real"]["summary"]["test_accuracy_mean"] >= 0.95
