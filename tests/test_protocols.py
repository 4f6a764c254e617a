"""Pretrained backbones (evaluate.protocol): a linear probe on frozen features, fine-tuning with
a new head, layer-wise learning rates and WiSE-FT, each selected on val and tested once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from synthset.errors import SynthsetError
from synthset.evaluate.cas import run_cas
from synthset.evaluate.classifiers import build_classifier
from synthset.evaluate.tensors import load_tensors
from synthset.evaluate.train import _param_groups, train_classifier
from synthset.recipe import EvaluateSpec, recipe_from_dict

NEW = [5, 6, 7, 8, 9]  # the probe's classes; labels 0-4 in its study


def _splits(digits: list[tuple[Path, int]]) -> dict[str, list[tuple[Path, int]]]:
    """Digits 5-9 (as labels 0-4): 24 train, 8 val, 8 test images per class."""
    splits: dict[str, list[tuple[Path, int]]] = {"train": [], "val": [], "test": []}
    for c in NEW:
        mine = [p for p, lbl in digits if lbl == c]
        for split, part in zip(splits, (mine[:24], mine[24:32], mine[32:40]), strict=True):
            splits[split] += [(p, c - 5) for p in part]
    return splits


@pytest.fixture(scope="module")
def backbones(
    digits_images: list[tuple[Path, int]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """small_cnn weights: pretrained on every digit (never the probe's val/test images), and
    an untrained one (the control)."""
    from safetensors.torch import save_file

    held_out = {p for split in ("val", "test") for p, _ in _splits(digits_images)[split]}
    seen = [(p, c) for p, c in digits_images if p not in held_out]
    data = load_tensors(seen, 8, 1, "pretraining")
    folder = tmp_path_factory.mktemp("backbones")
    out = {}
    for name, epochs in (("pretrained", 30), ("untrained", 0)):
        torch.manual_seed(0)
        model = build_classifier("small_cnn", 10, 1, 8)
        if epochs:
            spec = EvaluateSpec(epochs=epochs, batch_size=32, augment=False)
            best = train_classifier(model, data, data, spec, 0, torch.device("cpu"), False)
            model.load_state_dict(best.state)
        out[name] = folder / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out[name])
    return out


def _study(splits: dict, tmp: Path, **spec: Any) -> dict[str, Any]:
    settings = {"train_sets": ["real"], "epochs": 4, "seeds": [0], "image_size": 8, "channels": 1}
    result = run_cas(
        EvaluateSpec(**(settings | spec)), splits, [], [str(c) for c in NEW], tmp, False
    )
    return result["train_sets"]["real"]["runs"][0]


def test_linear_probe_on_pretrained_features_beats_an_untrained_backbone(
    digits_images: list, backbones: dict[str, Path], tmp_path: Path
) -> None:
    splits = _splits(digits_images)
    cs = [0.01, 0.1, 1.0, 10.0]
    probes = {
        name: _study(
            splits,
            tmp_path / name,
            protocol="linear_probe",
            classifier_weights=weights,
            probe_c=cs,
        )
        for name, weights in backbones.items()
    }
    good, control = probes["pretrained"], probes["untrained"]
    # the backbone's own 10-way head scores 0.90 on these 40 test digits: the probe recovers it
    assert good["test_accuracy"] >= 0.875, good["test_accuracy"]
    # random conv features already separate 8 px digits fairly well (0.825 here)
    assert good["test_accuracy"] > control["test_accuracy"] + 0.05, control["test_accuracy"]
    # C chosen on val: the best of its val accuracies, and the history has one entry per C
    assert len(good["val_accuracy_history"]) == len(cs) and good["probe_c"] in cs
    assert good["best_val_accuracy"] == max(good["val_accuracy_history"])
    assert good["val_accuracy_history"][cs.index(good["probe_c"])] == good["best_val_accuracy"]
    # the backbone stayed frozen: the weights file was only read
    runs = list((tmp_path / "pretrained" / "runs").glob("*.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["probe_c"] == good["probe_c"]


def test_a_linear_probe_separates_separable_features() -> None:
    """Three classes of noisy 8x8 patterns through a frozen random projection: a logistic
    regression on those features is near perfect on held-out images."""
    from synthset.evaluate.probe import fit_linear_probe
    from synthset.evaluate.tensors import TensorSet

    gen = torch.Generator().manual_seed(0)
    patterns = torch.rand(3, 1, 8, 8, generator=gen) * 255

    def images(n: int) -> TensorSet:
        labels = torch.arange(n) % 3
        noise = torch.randn(n, 1, 8, 8, generator=gen) * 40
        return TensorSet((patterns[labels] + noise).clamp(0, 255).to(torch.uint8), labels)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.Linear(16, 3))
    fitted = fit_linear_probe(model, images(90), images(30), [0.1, 1.0], 0, torch.device("cpu"))
    test = images(150)
    accuracy = (fitted.scores(test).argmax(1) == test.labels).float().mean().item()
    assert accuracy > 0.95, accuracy
    assert fitted.extra["probe_c"] in (0.1, 1.0)


def test_finetune_takes_a_new_head_and_wise_ft_picks_alpha_on_val(
    digits_images: list, backbones: dict[str, Path], tmp_path: Path
) -> None:
    run = _study(
        _splits(digits_images),
        tmp_path,
        protocol="finetune",
        classifier_weights=backbones["pretrained"],
        backbone_lr_scale=0.1,
        wise_ft_alphas=[0.0, 0.5],
        epochs=10,
        batch_size=32,
        input_normalization="imagenet",  # the backbone behind the Normalized wrapper
    )
    by_alpha = run["wise_ft_val_accuracy"]
    assert set(by_alpha) == {"0", "0.5", "1"}
    assert run["wise_ft_alpha"] in (0.0, 0.5, 1.0)
    assert (
        run["best_val_accuracy"] == by_alpha[f"{run['wise_ft_alpha']:g}"] == max(by_alpha.values())
    )
    assert run["test_accuracy"] > 0.8, run["test_accuracy"]


def test_layer_wise_learning_rates_put_the_head_at_lr() -> None:
    model = build_classifier("small_cnn", 5, 1, 8)
    spec = EvaluateSpec(lr=1e-2, backbone_lr_scale=0.1)
    backbone, top = _param_groups(model, spec)
    assert top["lr"] == pytest.approx(1e-2) and backbone["lr"] == pytest.approx(1e-3)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert {id(p) for p in top["params"]} == {id(p) for p in head.parameters()}
    assert len(backbone["params"]) + len(top["params"]) == len(list(model.parameters()))
    assert len(_param_groups(model, EvaluateSpec(lr=1e-2))) == 1


@pytest.mark.parametrize(
    ("evaluate", "fragment"),
    [
        ({"protocol": "linear_probe"}, "evaluate.protocol linear_probe starts from a pretrained"),
        ({"protocol": "finetune"}, "set evaluate.classifier_weights"),
        ({"wise_ft_alphas": [0.5]}, "set protocol: finetune"),
        ({"wise_ft_alphas": [1.5]}, "between 0 and 1"),
    ],
)
def test_bad_protocol_settings_are_one_line_errors(evaluate: dict, fragment: str) -> None:
    recipe = {
        "classes": {"names": ["a", "b"]},
        "real": {"source": "imagefolder", "path": "data"},
        "evaluate": {"train_sets": ["real"], **evaluate},
    }
    with pytest.raises(SynthsetError) as err:
        recipe_from_dict(recipe)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_backbone_without_its_weights_file_is_a_one_line_error(
    digits_images: list, tmp_path: Path
) -> None:
    miss = tmp_path / "nowhere.safetensors"
    with pytest.raises(SynthsetError, match="evaluate.classifier_weights: no file at") as err:
        _study(_splits(digits_images), tmp_path, protocol="linear_probe", classifier_weights=miss)
    assert "\n" not in str(err.value)


def test_zero_shot_clip_is_the_reference_row_of_the_study(tmp_path: Path, tiny_clip: Path) -> None:
    from test_retrieval import real_splits

    from synthset.report.eval_sections import cas_section

    splits = real_splits(tmp_path / "real")  # white (bright) and black (dark) squares
    spec = EvaluateSpec(
        train_sets=["real"],
        epochs=1,
        zero_shot_clip=str(tiny_clip),
        zero_shot_templates=["{}"],
    )
    cas = run_cas(spec, splits, [], ["white", "black"], tmp_path / "out", False)
    assert cas["zero_shot"]["test_accuracy"] == 1.0
    assert cas["zero_shot"]["confusion_matrix"] == [[1, 0], [0, 1]]
    # the class names' prompts decide: naming label 0 "black" makes every answer wrong
    flipped = run_cas(spec, splits, [], ["black", "white"], tmp_path / "flip", False)
    assert flipped["zero_shot"]["test_accuracy"] == 0.0
    saved = json.loads((tmp_path / "out" / "cas.json").read_text())
    assert saved["zero_shot"]["test_accuracy"] == 1.0
    # a rerun reads the kept result (marked here) instead of scoring again ...
    cache = tmp_path / "out" / "zero_shot.json"
    kept = json.loads(cache.read_text())
    kept["result"]["test_accuracy"] = 0.25
    cache.write_text(json.dumps(kept))
    assert (
        run_cas(spec, splits, [], ["white", "black"], tmp_path / "out", False)["zero_shot"][
            "test_accuracy"
        ]
        == 0.25
    )
    # ... until what it depends on changes
    other = spec.model_copy(update={"zero_shot_templates": ["a {}"]})
    rescored = run_cas(other, splits, [], ["white", "black"], tmp_path / "out", False)
    assert rescored["zero_shot"]["test_accuracy"] == 1.0
    assert rescored["zero_shot"]["templates"] == ["a {}"]
    assert "zero-shot CLIP" in cas_section(cas)


def test_pretrained_timm_backbones_see_the_pixel_statistics_of_their_weights() -> None:
    """auto: a timm model with weights gets its pretrained_cfg mean/std; from scratch, or a
    synthset small_cnn, sees [-1, 1] as is; the wrapper feeds exactly (x01 - mean) / std."""
    from synthset.evaluate.classifiers import INPUT_STATISTICS, Normalized, input_statistics

    model = build_classifier("timm:resnet18", 3, 3, 32)
    cfg = model.pretrained_cfg
    assert input_statistics(model, "timm:resnet18", "auto", True) == (
        tuple(cfg["mean"]),
        tuple(cfg["std"]),
    )
    assert input_statistics(model, "timm:resnet18", "auto", False) is None
    small = build_classifier("small_cnn", 3, 1, 8)
    assert input_statistics(small, "small_cnn", "auto", True) is None
    assert input_statistics(small, "small_cnn", "clip", False) == INPUT_STATISTICS["clip"]

    wrapped = Normalized(model, INPUT_STATISTICS["clip"], 3).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in INPUT_STATISTICS["clip"])
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), model.eval()((x + 1) / 2 / std - mean / std))
    assert set(wrapped.state_dict()) == {f"model.{k}" for k in model.state_dict()}
    gray = Normalized(small, INPUT_STATISTICS["imagenet"], 1)
    assert gray.mean.shape == (1, 1, 1, 1)
    assert gray.mean.item() == pytest.approx(sum(INPUT_STATISTICS["imagenet"][0]) / 3)
