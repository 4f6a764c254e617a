"""CAS studies: per-batch mixing, synthetic scaling (x k), real subsets, classifiers by name,
local weights, optimizers, per-epoch callbacks, and bad study inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import NAMES, cas_spec, make_samples, real_splits
from safetensors.torch import save_file

from synthset.data.splits import Samples
from synthset.errors import SynthsetError
from synthset.evaluate.cas import run_cas
from synthset.evaluate.classifiers import build_classifier, load_weights
from synthset.evaluate.studies import real_subset, study_sets, synthetic_subset
from synthset.evaluate.tensors import TensorSet
from synthset.evaluate.train import TrainData, train_classifier
from synthset.recipe import EvaluateSpec


@pytest.fixture()
def real(tmp_path: Path) -> dict[str, Samples]:
    return real_splits(tmp_path, train=10, val=4, test=4)


def labelled(n_per_class: list[int], value: int) -> TensorSet:
    """A set whose pixels all equal ``value``, with ``n_per_class[c]`` images of class c."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    return TensorSet(torch.full((len(labels), 1, 4, 4), value, dtype=torch.uint8), labels)


def test_mixed_batches_hold_the_real_share_and_an_epoch_is_one_pass_over_real() -> None:
    real, syn = labelled([6, 6], 10), labelled([50, 50], 200)
    data = TrainData(real, syn, real_batch_fraction=0.25)
    assert data.split_batch(8) == (2, 6)
    assert data.steps_per_epoch(8) == 6  # 12 real images, 2 per batch
    gen = torch.Generator().manual_seed(0)
    epochs = data.epochs(8, gen)
    seen_syn = []
    for _ in range(3):
        batches = list(next(epochs))
        assert len(batches) == 6
        for b in batches:
            assert int((b.images[:, 0, 0, 0] == 10).sum()) == 2  # real images per batch
            assert int((b.images[:, 0, 0, 0] == 200).sum()) == 6
        seen_syn.append(sum(len(b) - 2 for b in batches))
    # the synthetic images stream on across epochs (18 a pass), they do not restart
    assert seen_syn == [36, 36, 36]


def test_union_epochs_are_a_pass_over_real_and_synthetic_together() -> None:
    """mixed_epoch union: a small real set no longer cuts the epoch short; every batch keeps the
    real share, and both sets stream on (each real image seen as often as any other)."""
    real, syn = labelled([3, 3], 10), labelled([50, 50], 200)
    data = TrainData(real, syn, real_batch_fraction=0.25, mixed_epoch="union")
    assert data.steps_per_epoch(8) == 14  # (6 + 100) images, 8 per batch
    assert TrainData(real, syn, real_batch_fraction=0.25).steps_per_epoch(8) == 3
    epochs = data.epochs(8, torch.Generator().manual_seed(0))
    batches = [b for _ in range(3) for b in next(epochs)]
    assert len(batches) == 42
    assert all(int((b.images[:, 0, 0, 0] == 10).sum()) == 2 for b in batches)
    real_labels = torch.cat([b.labels[b.images[:, 0, 0, 0] == 10] for b in batches])
    assert len(real_labels) == 84 and torch.bincount(real_labels).tolist() == [42, 42]
    spec = EvaluateSpec(real_subsets=[0.5], real_batch_fraction=0.5, mixed_epoch="union")
    epochs_of = {p.label: p.mixed_epoch for p in study_sets(spec) if p.real_batch_fraction}
    assert epochs_of == {"real+synthetic": "union", "real 50%+synthetic": "union"}


def test_plain_concatenation_when_no_share_is_set() -> None:
    data = TrainData(labelled([3, 3], 10), labelled([5, 5], 200))
    batches = list(next(data.epochs(4, torch.Generator().manual_seed(0))))
    assert sum(len(b) for b in batches) == 16
    assert data.steps_per_epoch(4) == 4


def test_study_sets_cover_scaling_and_real_subsets() -> None:
    s = EvaluateSpec(synthetic_multipliers=[2, 0.5], real_subsets=[0.25], real_batch_fraction=0.5)
    labels = [(p.label, p.kind) for p in study_sets(s)]
    assert labels == [
        ("real", "real"),
        ("synthetic", "synthetic"),
        ("real+synthetic", "real+synthetic"),
        ("synthetic x0.5", "synthetic"),
        ("synthetic x2", "synthetic"),
        ("real 25%", "real"),
        ("real 25%+synthetic", "real+synthetic"),
    ]
    mixes = {p.label: p.real_batch_fraction for p in study_sets(s)}
    assert mixes["real+synthetic"] == 0.5 and mixes["real"] is None


def test_subsets_are_stratified_and_fixed() -> None:
    real, syn = labelled([8, 4], 1), labelled([30, 30], 2)
    syn.images[:, 0, 0, 0] = torch.arange(60, dtype=torch.uint8)  # tell images apart
    sub = synthetic_subset(syn, real, 2.0, 2)
    assert torch.bincount(sub.labels).tolist() == [16, 8]
    assert torch.equal(sub.images, synthetic_subset(syn, real, 2.0, 2).images)
    assert torch.bincount(real_subset(real, 0.5, 2).labels).tolist() == [4, 2]
    with pytest.raises(SynthsetError, match="needs 32 images but has 30"):
        synthetic_subset(syn, real, 4.0, 2)


def test_scaling_study_writes_every_set_with_its_sizes(
    tmp_path: Path, real: dict[str, Samples]
) -> None:
    synthetic = make_samples(tmp_path / "syn", 25, 3)
    s = cas_spec(
        train_sets=["real", "real+synthetic"],
        synthetic_multipliers=[0.5, 2],
        synthetic_counts=[4, 20],
        real_subsets=[0.5],
        real_batch_fraction=0.5,
        epochs=2,
    )
    result = run_cas(s, real, synthetic, NAMES, tmp_path / "e", progress=False)
    sets = result["train_sets"]
    assert list(sets) == [
        "real",
        "real+synthetic",
        "synthetic x0.5",
        "synthetic x2",
        "synthetic 4/class",
        "synthetic 20/class",
        "real 50%",
        "real 50%+synthetic",
    ]
    got = {k: (v["summary"]["n_real"], v["summary"]["n_synthetic"]) for k, v in sets.items()}
    assert got == {
        "real": (30, 0),
        "real+synthetic": (30, 75),
        "synthetic x0.5": (0, 15),
        "synthetic x2": (0, 60),
        "synthetic 4/class": (0, 12),
        "synthetic 20/class": (0, 60),
        "real 50%": (15, 0),
        "real 50%+synthetic": (15, 75),
    }
    assert sets["synthetic x2"]["summary"]["synthetic_multiplier"] == 2
    assert sets["synthetic 20/class"]["summary"]["synthetic_per_class"] == 20
    too_many = s.model_copy(update={"synthetic_counts": [26]})
    with pytest.raises(SynthsetError, match=r"synthetic_counts: 26 per class .* has 25"):
        run_cas(too_many, real, synthetic, NAMES, tmp_path / "e2", progress=False)
    assert sets["real 50%"]["summary"]["real_subset"] == 0.5
    assert sets["real+synthetic"]["summary"]["real_batch_fraction"] == 0.5
    cm = sets["real"]["summary"]["confusion_matrix"]
    assert sum(map(sum, cm)) == len(real["test"]) * len(s.seeds)
    assert len(sets["real"]["summary"]["per_class_accuracy_mean"]) == 3
    on_disk = json.loads((tmp_path / "e" / "cas.json").read_text())
    assert on_disk["train_sets"].keys() == sets.keys()


def test_empty_class_and_missing_test_split_are_one_line_errors(
    tmp_path: Path, real: dict[str, Samples]
) -> None:
    synthetic = [s for s in make_samples(tmp_path / "syn", 5, 3) if s[1] != 2]
    with pytest.raises(SynthsetError, match="class 'checker' has no images") as err:
        run_cas(cas_spec(train_sets=["synthetic"]), real, synthetic, NAMES, tmp_path / "e", False)
    assert "\n" not in str(err.value)
    with pytest.raises(SynthsetError, match="real test split is empty.*test_fraction"):
        run_cas(cas_spec(), real | {"test": []}, [], NAMES, tmp_path / "e", False)


def test_on_epoch_sees_every_epoch_and_can_stop_training(real: dict[str, Samples]) -> None:
    from synthset.evaluate.tensors import load_tensors

    train = load_tensors(real["train"], 8, 1, "train")
    val = load_tensors(real["val"], 8, 1, "val")
    seen: list[tuple[int, float]] = []

    class Stop(Exception):
        pass

    def hook(epoch: int, acc: float, loss: float) -> None:
        seen.append((epoch, acc))
        if epoch == 2:
            raise Stop

    model = build_classifier("small_cnn", 3, 1, 8)
    with pytest.raises(Stop):
        train_classifier(
            model, train, val, cas_spec(epochs=10), 0, torch.device("cpu"), False, "t", hook
        )
    assert [e for e, _ in seen] == [0, 1, 2]


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_cifar_resnet20_learns_separable_data(
    real: dict[str, Samples], tmp_path: Path, optimizer: str
) -> None:
    model = build_classifier("cifar_resnet20", 3, 1, 8)
    assert 0.26e6 < sum(p.numel() for p in model.parameters()) < 0.28e6
    lr = 0.05 if optimizer == "sgd" else 2e-3
    s = cas_spec(
        classifier="cifar_resnet20",
        train_sets=["real"],
        epochs=15,
        batch_size=8,
        optimizer=optimizer,
        lr=lr,
    )
    result = run_cas(s, real, [], NAMES, tmp_path / "e", progress=False)
    assert result["config"]["optimizer"] == optimizer
    assert result["train_sets"]["real"]["summary"]["test_accuracy_mean"] >= 0.9


def test_local_weights_load_and_a_new_head_is_kept_fresh(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_classifier("small_cnn", 5, 1, 8)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = build_classifier("small_cnn", 3, 1, 8)  # other head shape
    head_before = target.head[-1].weight.clone()
    load_weights(target, path)
    assert torch.equal(target.features[0].weight, source.features[0].weight)
    assert torch.equal(target.head[-1].weight, head_before)
    pt = tmp_path / "w.pt"
    torch.save(source.state_dict(), pt)
    same = build_classifier("small_cnn", 5, 1, 8)
    load_weights(same, pt)
    assert torch.equal(same.head[-1].weight, source.head[-1].weight)
    with pytest.raises(SynthsetError, match="tensors of evaluate.classifier match"):
        load_weights(build_classifier("cifar_resnet20", 3, 1, 8), path)
    with pytest.raises(SynthsetError, match="classifier_weights: no file"):
        load_weights(target, tmp_path / "missing.safetensors")


@pytest.mark.parametrize(
    "name,size",
    [
        ("mobilenet_v2", 32),
        ("efficientnet_b0", 32),
        ("resnet50", 32),
        ("timm:vit_tiny_patch16_224", 32),
    ],
)
def test_named_architectures_build_for_small_images(name: str, size: int) -> None:
    pytest.importorskip("timm") if name.startswith("timm:") else None
    model = build_classifier(name, 10, 3, size)
    assert model(torch.zeros(2, 3, size, size)).shape[-1] == 10


def test_out_of_domain_test_set_is_scored_beside_test(
    tmp_path: Path, real: dict[str, Samples]
) -> None:
    """evaluate.ood_test is scored once per run beside test: on noise images (a domain where
    the classes' patterns are gone) a classifier that aces test falls to about chance."""
    from PIL import Image

    rng = np.random.default_rng(7)
    ood = []
    for c, name in enumerate(NAMES):
        (tmp_path / "ood" / name).mkdir(parents=True)
        for k in range(8):
            path = tmp_path / "ood" / name / f"{k}.png"
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(path)
            ood.append((path, c))
    spec = cas_spec(train_sets=["real"], epochs=6, seeds=[0, 1])
    result = run_cas(spec, real, [], NAMES, tmp_path / "e", progress=False, ood=ood)
    entry = result["train_sets"]["real"]
    runs = entry["runs"]
    assert all(0 <= r["ood_test_accuracy"] <= 1 for r in runs)
    mean = sum(r["ood_test_accuracy"] for r in runs) / 2
    assert entry["summary"]["ood_test_accuracy_mean"] == pytest.approx(mean)
    assert entry["summary"]["test_accuracy_mean"] > 0.9
    assert entry["summary"]["ood_test_accuracy_mean"] < 0.7
    assert result["config"]["n_ood_test"] == 24
    plain = run_cas(spec, real, [], NAMES, tmp_path / "e", progress=False)  # no ood: retrains
    assert "ood_test_accuracy" not in plain["train_sets"]["real"]["runs"][0]


def test_balanced_and_top5_accuracy() -> None:
    """Balanced accuracy weighs every class alike; top-5 counts a label among the 5 best."""
    from synthset.evaluate.train import test_metrics

    labels = torch.tensor([0] * 8 + [1] * 2)
    preds = torch.zeros(10, dtype=torch.int64)  # always class 0: 80% accurate, 50% balanced
    m = test_metrics(preds, labels, 2)
    assert m["test_accuracy"] == pytest.approx(0.8)
    assert m["test_balanced_accuracy"] == pytest.approx(0.5)
    assert "test_top5_accuracy" not in m  # 2 classes
    scores = torch.arange(7.0).repeat(4, 1)  # class 6 best, then 5, 4, 3, 2
    m = test_metrics(scores.argmax(1), torch.tensor([6, 2, 1, 0]), 7, scores)
    assert m["test_accuracy"] == pytest.approx(0.25)
    assert m["test_top5_accuracy"] == pytest.approx(0.5)


def test_bad_study_values_are_rejected_by_the_recipe() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="multiplier must be > 0"):
        EvaluateSpec(synthetic_multipliers=[0])
    with pytest.raises(ValidationError, match="fraction between 0 and 1"):
        EvaluateSpec(real_subsets=[1.5])
    with pytest.raises(ValidationError, match="images per class >= 1"):
        EvaluateSpec(synthetic_counts=[0])
    with pytest.raises(ValidationError):
        EvaluateSpec(real_batch_fraction=1.0)


def test_flip_augmentation_flips_about_half_and_keeps_pixels() -> None:
    from synthset.evaluate.train import augment

    x = torch.arange(64 * 16, dtype=torch.uint8).reshape(64, 1, 4, 4) % 251
    gen = torch.Generator().manual_seed(0)
    flipped = augment(x, "shift+flip", 0, gen)  # pad 0: no shift, only flips
    is_flip = [torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x, strict=True)]
    is_same = [torch.equal(f, o) for f, o in zip(flipped, x, strict=True)]
    assert all(a or b for a, b in zip(is_flip, is_same, strict=True))
    assert 16 <= sum(is_flip) <= 48
    same = augment(x, False, 1, gen)
    assert same is x


def test_decoded_tensors_are_cached_memory_mapped_and_invalidated(
    tmp_path: Path, real: dict[str, Samples]
) -> None:
    import numpy as np
    from PIL import Image

    from synthset.evaluate.tensors import load_tensors

    samples = real["train"]
    cache = tmp_path / "cache"
    first = load_tensors(samples, 8, 1, "real train", cache)
    files = list(cache.glob("*.npy"))
    assert len(files) == 1 and not list(cache.glob(".*tmp"))
    again = load_tensors(samples, 8, 1, "real train", cache)
    assert torch.equal(first.images, again.images)
    assert torch.equal(again.images, load_tensors(samples, 8, 1, "real train").images)
    assert len(list(cache.glob("*.npy"))) == 1  # reused, not decoded again
    # a changed file is a new cache entry with the new pixels
    path = samples[0][0]
    Image.fromarray(np.full((8, 8), 255, np.uint8), "L").save(path)
    changed = load_tensors(samples, 8, 1, "real train", cache)
    assert int(changed.images[0].min()) == 255
    assert len(list(cache.glob("*.npy"))) == 2


def test_ema_keeps_the_moving_average_of_every_step(real: dict[str, Samples]) -> None:
    """With ``ema_epochs`` the weights validated and kept are an exponential moving average of
    the weights (and batch-norm statistics) after every optimizer step, with decay
    ``1 - 1 / (ema_epochs × steps per epoch)``; recomputed here by hand from real snapshots."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from synthset.evaluate.tensors import load_tensors

    train = load_tensors(real["train"], 8, 1, "train")  # 30 images: 4 batches of 8
    val = load_tensors(real["val"], 8, 1, "val")
    model = build_classifier("small_cnn", 3, 1, 8)
    snapshots: list[dict[str, torch.Tensor]] = []

    def snapshot(*_: object) -> None:
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    handle = register_optimizer_step_post_hook(snapshot)
    try:
        s = cas_spec(epochs=1, batch_size=8, ema_epochs=2)
        best = train_classifier(model, train, val, s, 0, torch.device("cpu"), False)
    finally:
        handle.remove()

    assert len(snapshots) == 4
    decay = 1 - 1 / (2 * 4)
    expected = dict(snapshots[0])
    for snap in snapshots[1:]:
        for k, v in snap.items():
            if v.is_floating_point():
                expected[k] = decay * expected[k] + (1 - decay) * v
    assert best.state.keys() == expected.keys()
    for k, v in expected.items():
        if v.is_floating_point():
            assert torch.allclose(best.state[k], v, atol=1e-6), k
    raw = snapshots[-1]["features.0.weight"]
    assert not torch.allclose(best.state["features.0.weight"], raw)  # not the last raw weights
    # the averaged weights are what validation scored
    model.load_state_dict(best.state)
    from synthset.evaluate.train import accuracy_and_loss

    assert accuracy_and_loss(model, val, torch.device("cpu"))[0] == best.best_val_accuracy


def test_ema_scores_separable_data_high(tmp_path: Path, real: dict[str, Samples]) -> None:
    synthetic = make_samples(tmp_path / "syn", 12, 3)
    s = cas_spec(epochs=12, ema_epochs=2, real_batch_fraction=0.5)
    result = run_cas(s, real, synthetic, NAMES, tmp_path / "e", progress=False)
    assert result["config"]["ema_epochs"] == 2
    for name in ("real", "synthetic", "real+synthetic"):
        assert result["train_sets"][name]["summary"]["test_accuracy_mean"] >= 0.9, name
    with pytest.raises(ValueError, match="ema_epochs"):
        EvaluateSpec(ema_epochs=0)
