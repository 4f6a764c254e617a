"""Fidelity and diversity metrics: FID, KID, precision/recall, density/coverage, diversity and
CLIP score, with pluggable feature extractors built offline."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import NAMES, make_samples, real_splits
from PIL import Image

from synthset.data.splits import Samples
from synthset.errors import SynthsetError
from synthset.evaluate.fidelity import run_fidelity, subsample
from synthset.evaluate.fidelity_metrics import METRIC_KEYS, compare, diversity, fid, kid, prdc
from synthset.recipe import EvaluateSpec, FidelitySpec
from synthset.store.imagefolder import read_prompts
from synthset.testing import build_trained_tiny_clip


@pytest.fixture()
def real(tmp_path: Path) -> dict[str, Samples]:
    return real_splits(tmp_path, train=16, val=8, test=8)


def spec(**fidelity: object) -> EvaluateSpec:
    fs = {"device": "cpu", "kid_subsets": 10, "k": 3, "classifier_epochs": None} | fidelity
    return EvaluateSpec(epochs=4, batch_size=16, device="cpu", fidelity=FidelitySpec(**fs))


# ----------------------------------------------------------------------------- metrics


def test_identical_features_score_perfectly_and_shifted_ones_do_not() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(120, 8, generator=g, dtype=torch.float64)
    same = compare(a, a.clone(), 5, 50, 10, 0)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["diversity_real"] == same["diversity_synthetic"] > 0

    fresh = compare(a, torch.randn(120, 8, generator=g, dtype=torch.float64), 5, 50, 10, 0)
    shifted = compare(a, torch.randn(120, 8, generator=g, dtype=torch.float64) + 2.0, 5, 50, 10, 0)
    assert 0 < fresh["fid"] < 1.0 < 10 * fresh["fid"] < shifted["fid"]
    assert shifted["kid_mean"] > 10 * max(fresh["kid_mean"], 1e-3)
    # KID is unbiased: zero mean for equal sets, up to the noise of its random subsets
    assert abs(same["kid_mean"]) < shifted["kid_mean"] / 20
    assert shifted["precision"] < 0.5 < fresh["precision"] <= 1.0
    assert shifted["coverage"] < fresh["coverage"]


def test_low_rank_fid_equals_torchmetrics_fid() -> None:
    from torchmetrics.image.fid import _compute_fid

    g = torch.Generator().manual_seed(2)
    a = torch.randn(30, 40, generator=g, dtype=torch.float64) * 2
    b = torch.randn(20, 40, generator=g, dtype=torch.float64) + 0.5
    mu_a, mu_b = a.mean(0), b.mean(0)
    reference = float(_compute_fid(mu_a, torch.cov(a.T), mu_b, torch.cov(b.T)))
    assert fid(a, b) == pytest.approx(reference, rel=1e-6)  # 20 < 40 dims: the low-rank path
    assert fid(a[:, :10], b[:, :10]) == pytest.approx(
        float(
            _compute_fid(
                a[:, :10].mean(0), torch.cov(a[:, :10].T), b[:, :10].mean(0), torch.cov(b[:, :10].T)
            )
        )
    )


def test_metrics_degrade_to_none_for_tiny_sets_and_kid_is_seeded() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    assert prdc(a, b, k=6) == dict.fromkeys(("precision", "recall", "density", "coverage"))
    assert prdc(a, b, k=2)["precision"] is not None
    assert fid(a[:1], b) is None and diversity(a[:1]) is None
    assert kid(a[:1], b, 100, 5, 0) == (None, None)
    # subset size shrinks to the smaller set instead of failing; same seed, same subsets
    assert kid(a, b, 100, 5, 0) == kid(a, b, 100, 5, 0)
    assert kid(a, b, 100, 5, 0) != kid(a, b, 100, 5, 1)
    # diversity is the mean distance between distinct rows
    pts = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert diversity(pts) == pytest.approx(5.0)


def test_subsample_is_seeded_and_per_class() -> None:
    samples = [(Path(f"{i}.png"), i % 3) for i in range(30)]
    a = subsample(samples, 4, seed=0)
    assert a == subsample(samples, 4, seed=0)
    assert a != subsample(samples, 4, seed=1)
    assert sorted(lbl for _, lbl in a) == [0] * 4 + [1] * 4 + [2] * 4
    assert subsample(samples, 50, seed=0) == samples


# ----------------------------------------------------------------------------- run_fidelity


def test_classifier_features_identical_vs_inverted_sets(
    tmp_path: Path, real: dict[str, Samples]
) -> None:
    out = tmp_path / "eval"
    same = run_fidelity(
        spec(),
        real,
        real["train"],
        prompts_by_path=None,
        class_names=NAMES,
        out_dir=out,
        progress=False,
    )
    assert same["extractor"] == "classifier:small_cnn-real"
    assert same["n_real"] == same["n_synthetic"] == 48
    assert same["overall"]["fid"] == pytest.approx(0.0, abs=1e-4)
    assert same["overall"]["precision"] == same["overall"]["recall"] == 1.0
    assert set(same["per_class"]) == set(NAMES)
    for name in NAMES:
        assert set(same["per_class"][name]) == {*METRIC_KEYS, "label_fidelity"}
        assert same["per_class"][name]["fid"] == pytest.approx(0.0, abs=1e-4)
    assert same["clip_score"] is None
    # the held-out real val split against real train: the yardstick for a perfect generator
    assert same["real_baseline"]["n"] == 24 and same["real_baseline"]["fid"] > 0
    on_disk = json.loads((out / "fidelity.json").read_text())
    assert on_disk["extractor"] == same["extractor"] and on_disk["feature_dim"] == 128

    weights = out / "fidelity_classifier.safetensors"
    trained_at = weights.stat().st_mtime_ns
    inverted = make_samples(tmp_path / "inverted", 16, 0, invert=True)
    shifted = run_fidelity(
        spec(), real, inverted, prompts_by_path=None, class_names=NAMES, out_dir=out, progress=False
    )
    assert weights.stat().st_mtime_ns == trained_at  # the extractor was reused, not retrained
    assert shifted["overall"]["fid"] > 10 * same["real_baseline"]["fid"]
    assert shifted["overall"]["precision"] < 0.5
    # settings its training never sees reuse it; training settings it depends on retrain it
    other_study = spec().model_copy(update={"train_sets": ["real"], "trackers": []})
    run_fidelity(
        other_study,
        real,
        inverted,
        prompts_by_path=None,
        class_names=NAMES,
        out_dir=out,
        progress=False,
    )
    assert weights.stat().st_mtime_ns == trained_at
    averaged = spec().model_copy(update={"ema_epochs": 2.0})
    run_fidelity(
        averaged,
        real,
        inverted,
        prompts_by_path=None,
        class_names=NAMES,
        out_dir=out,
        progress=False,
    )
    assert weights.stat().st_mtime_ns != trained_at
    for name in NAMES:
        assert shifted["per_class"][name]["fid"] > 10 * same["real_baseline"]["fid"]


def test_label_fidelity_is_the_share_the_real_classifier_gives_its_own_label(
    tmp_path: Path, real: dict[str, Samples]
) -> None:
    def fidelity(synthetic: Samples) -> dict[str, Any]:
        return run_fidelity(
            spec(),
            real,
            synthetic,
            prompts_by_path=None,
            class_names=NAMES,
            out_dir=tmp_path / "eval",
            progress=False,
        )

    right = fidelity(real["train"])
    # the same images, each labelled as the next class: the classifier's answers do not change
    shifted = fidelity([(path, (lbl + 1) % len(NAMES)) for path, lbl in real["train"]])
    score = right["overall"]["label_fidelity"]
    assert score >= 0.9  # the images it was trained on
    assert shifted["overall"]["label_fidelity"] <= 1 - score
    for name in NAMES:
        assert 0.0 <= right["per_class"][name]["label_fidelity"] <= 1.0
    per_class = [right["per_class"][n]["label_fidelity"] for n in NAMES]
    assert sum(per_class) / len(per_class) == pytest.approx(score)  # equal classes here
    # the yardstick: held-out real val images, as the same classifier labels them
    assert 0.0 <= right["real_baseline"]["label_fidelity"] <= 1.0


def test_small_class_gives_nulls_not_failure(tmp_path: Path, real: dict[str, Samples]) -> None:
    synthetic = make_samples(tmp_path / "syn", 16, 5)
    synthetic = [s for s in synthetic if s[1] != 2] + [s for s in synthetic if s[1] == 2][:2]
    res = run_fidelity(
        spec(k=3),
        real,
        synthetic,
        prompts_by_path=None,
        class_names=NAMES,
        out_dir=tmp_path / "e",
        progress=False,
    )
    small = res["per_class"]["checker"]
    assert small["precision"] is None and small["coverage"] is None  # 2 images <= k
    assert small["fid"] is not None and math.isfinite(small["kid_mean"])
    assert res["per_class"]["stripes"]["precision"] is not None
    only_two = [s for s in synthetic if s[1] != 1]
    res = run_fidelity(
        spec(),
        real,
        only_two,
        prompts_by_path=None,
        class_names=NAMES,
        out_dir=tmp_path / "e",
        progress=False,
    )
    # a class without synthetic images: every metric null, its label fidelity too
    assert res["per_class"]["columns"] == dict.fromkeys((*METRIC_KEYS, "label_fidelity"))


def test_bad_extractor_inputs_are_one_line_errors(tmp_path: Path, real: dict[str, Samples]) -> None:
    syn = real["train"]

    def fidelity(synthetic: Samples = syn, **fs: Any) -> None:
        run_fidelity(
            spec(**fs),
            real,
            synthetic,
            prompts_by_path=None,
            class_names=NAMES,
            out_dir=tmp_path / "e",
            progress=False,
        )

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.zeros(10, 512)}, str(other))
    cases = [
        ({"extractor": "inception"}, "inception_weights is not set"),
        ({"inception_weights": str(tmp_path / "nope.pth")}, "weights file not found"),
        ({"extractor": "resnet18"}, "unknown extractor 'resnet18'"),
        ({"extractor": "torchvision:resnet18"}, "needs evaluate.fidelity.weights"),
        ({"extractor": "torchscript:" + str(tmp_path / "x.pt")}, "TorchScript file not found"),
        ({"inception_weights": str(bad)}, "cannot load weights"),
        ({"inception_weights": str(other)}, "does not hold Inception-v3 weights"),
    ]
    for fs, fragment in cases:
        with pytest.raises(SynthsetError, match=fragment) as info:
            fidelity(**fs)
        assert "\n" not in str(info.value)
    with pytest.raises(SynthsetError, match="no synthetic images"):
        fidelity([])


# ----------------------------------------------------------------------------- extractors


def _inception_state(num_classes: int, aux: bool) -> dict[str, torch.Tensor]:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.inception_v3(
        weights=None, aux_logits=aux, init_weights=True, num_classes=num_classes
    )
    # calibrate the batch-norm statistics on noise: with the init's mean 0 / var 1 the
    # activations grow layer by layer to ~1e10, where float64 rounding alone exceeds any tolerance
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 299, 299) * 2 - 1)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def test_inception_from_local_torchvision_weights(tmp_path: Path, real: dict[str, Samples]) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "inception_v3.safetensors"
    save_file(_inception_state(1000, aux=True), str(path))
    few = {"train": subsample(real["train"], 2, 0)}  # no val: no baseline, fewer images
    fs = {"inception_weights": str(path), "k": 1, "batch_size": 16}
    res = run_fidelity(
        spec(**fs),
        few,
        few["train"],
        prompts_by_path=None,
        class_names=NAMES,
        out_dir=tmp_path / "e",
        progress=False,
    )
    assert res["extractor"] == "inception-v3-torchvision" and res["feature_dim"] == 2048
    assert res["overall"]["fid"] == pytest.approx(0.0, abs=1e-3)
    assert "label_fidelity" not in res["overall"]  # ImageNet's classes are not the recipe's
    assert res["config"]["channels"] == 3


def test_inception_from_torch_fidelity_fid_weights(
    tmp_path: Path, real: dict[str, Samples]
) -> None:
    pytest.importorskip("torch_fidelity")
    path = tmp_path / "pt_inception-2015-12-05.pth"
    torch.save(_inception_state(1008, aux=False), path)  # the FID network's 1008 logits
    few = {"train": subsample(real["train"], 2, 0)}
    inverted = subsample(make_samples(tmp_path / "inv", 2, 0, invert=True), 2, 0)
    fs = {"extractor": "inception", "inception_weights": str(path), "k": 1}
    res = run_fidelity(
        spec(**fs),
        few,
        inverted,
        prompts_by_path=None,
        class_names=NAMES,
        out_dir=tmp_path / "e",
        progress=False,
    )
    assert res["extractor"] == "inception-v3-fid" and res["feature_dim"] == 2048
    assert res["overall"]["fid"] > 0


class _TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3)
        self.head = torch.nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean((2, 3)))


def test_user_torchscript_and_torchvision_extractors(
    tmp_path: Path, real: dict[str, Samples]
) -> None:
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    script = tmp_path / "features.pt"
    torch.jit.script(_TinyNet()).save(str(script))
    common = {"extractor_image_size": 16, "k": 2}
    res = run_fidelity(
        spec(extractor=f"torchscript:{script}", **common),
        real,
        real["train"],
        prompts_by_path=None,
        class_names=NAMES,
        out_dir=tmp_path / "e",
        progress=False,
    )
    assert res["extractor"] == "user:features.pt" and res["feature_dim"] == 4

    weights = tmp_path / "resnet18.safetensors"
    save_file(torchvision.models.resnet18(weights=None).state_dict(), str(weights))
    res = run_fidelity(
        spec(extractor="torchvision:resnet18", weights=str(weights), **common),
        real,
        real["train"],
        prompts_by_path=None,
        class_names=NAMES,
        out_dir=tmp_path / "e",
        progress=False,
    )
    assert res["extractor"] == "user:torchvision:resnet18" and res["feature_dim"] == 512
    assert res["overall"]["fid"] == pytest.approx(0.0, abs=1e-4)


# ----------------------------------------------------------------------------- CLIP score


def test_clip_score_prefers_the_matching_prompt(tmp_path: Path, real: dict[str, Samples]) -> None:
    from synthset.scoring.clip_score import ClipScorer

    folder = build_trained_tiny_clip(tmp_path)
    scorer = ClipScorer(str(folder), torch.device("cpu"))
    white, black = Image.new("RGB", (16, 16), "white"), Image.new("RGB", (16, 16), "black")
    scores = scorer([white, white, black, black], ["white", "black", "black", "white"])
    assert torch.isfinite(scores).all() and (scores >= 0).all()
    assert scores[0] > scores[1] and scores[2] > scores[3]
    again = scorer([white, white, black, black], ["white", "black", "black", "white"])
    assert torch.equal(scores, again)  # deterministic

    # through run_fidelity: prompts come from the synthetic set's metadata.jsonl
    syn_dir = tmp_path / "syn"
    synthetic = make_samples(syn_dir, 4, 3)
    rows = [
        {"file_name": str(p.relative_to(syn_dir)), "label": lbl, "prompt": f"a {NAMES[lbl]}"}
        for p, lbl in synthetic
    ]
    (syn_dir / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = read_prompts(syn_dir)
    assert prompts is not None and len(prompts) == 12
    res = run_fidelity(
        spec(clip_model=str(folder), k=2),
        real,
        synthetic,
        prompts_by_path=prompts,
        class_names=NAMES,
        out_dir=tmp_path / "e",
    )
    clip = res["clip_score"]
    assert clip["model"] == str(folder) and clip["n"] == 12
    assert math.isfinite(clip["mean"]) and set(clip["per_class"]) == set(NAMES)
    assert json.loads((tmp_path / "e" / "fidelity.json").read_text())["clip_score"] == clip


def test_missing_clip_model_is_one_line_error(tmp_path: Path, real: dict[str, Samples]) -> None:
    prompts = {str(p): "x" for p, _ in real["train"]}
    with pytest.raises(SynthsetError, match="clip_model .* cannot load a CLIP model"):
        run_fidelity(
            spec(clip_model=str(tmp_path / "no-clip")),
            real,
            real["train"],
            prompts_by_path=prompts,
            class_names=NAMES,
            out_dir=tmp_path / "e",
            progress=False,
        )


# ----------------------------------------------------------------------------- pipeline / CLI

TOY = [
    "adapt.channels=[8, 16]",
    "adapt.steps=30",
    "adapt.batch_size=32",
    "generate.images_per_class=12",
    "generate.batch_size=40",
    "generate.generator.steps=5",
    "evaluate.epochs=2",
    "evaluate.fidelity.classifier_epochs=2",
]


def synthset(*args: str) -> Any:
    """The real CLI app, in this process (no second interpreter start-up)."""
    from typer.testing import CliRunner

    from synthset.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250", "HF_HUB_OFFLINE": "1"})


def test_fidelity_verb_on_a_tiny_digits_run(tmp_path: Path) -> None:
    from synthset.cli import bundled_recipe

    run = tmp_path / "digits"
    sets = [a for item in TOY for a in ("--set", item)]
    args = ["fidelity", str(bundled_recipe("digits")), "--out", str(run), "-q", *sets]
    first = synthset(*args)
    assert first.exit_code == 0, first.stderr[-3000:]
    assert "features: classifier:small_cnn-real" in " ".join(first.stdout.split())  # any width
    result = json.loads((run / "evaluate" / "fidelity.json").read_text())
    assert result["extractor"] == "classifier:small_cnn-real"
    assert result["n_synthetic"] == 120 and result["n_real"] == 1077
    assert set(result["per_class"]) == {str(d) for d in range(10)}
    assert all(math.isfinite(m["fid"]) for m in result["per_class"].values())
    assert result["overall"]["fid"] > result["real_baseline"]["fid"] > 0
    assert not (run / "evaluate" / "cas.json").exists()  # the verb runs no CAS

    marker = run / "stages" / "fidelity.json"
    done_at = marker.stat().st_mtime_ns
    again = synthset(*args)  # finished: read back, nothing recomputed
    assert again.exit_code == 0 and marker.stat().st_mtime_ns == done_at

    bad = synthset(*args, "--set", "evaluate.fidelity.extractor=bogus")
    assert bad.exit_code == 2
    assert bad.stderr.strip().count("\n") == 0 and "unknown extractor 'bogus'" in bad.stderr


def test_fidelity_settings_do_not_change_the_cas_fingerprint() -> None:
    from synthset.recipe import recipe_from_dict

    base = {"classes": {"dataset": "digits"}, "real": {"source": "digits"}}
    base["evaluate"] = {"train_sets": ["real"]}
    a = recipe_from_dict(base)
    b = recipe_from_dict(base | {"evaluate": {"train_sets": ["real"], "fidelity": {"k": 7}}})
    c = recipe_from_dict(base | {"evaluate": {"train_sets": ["real"], "epochs": 3}})
    assert a.fingerprint("evaluate") == b.fingerprint("evaluate") != c.fingerprint("evaluate")


def test_clip_score_with_a_local_open_clip_checkpoint(tmp_path: Path) -> None:
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    from synthset.scoring.clip_score import ClipScorer

    config = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 16,
            "layers": 1,
            "width": 32,
            "patch_size": 8,
            "head_width": 16,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    }
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "synthset-tiny-clip.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "cfg")
    torch.manual_seed(0)
    model = open_clip.create_model("synthset-tiny-clip")
    ckpt = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))

    scorer = ClipScorer(f"open_clip:synthset-tiny-clip@{ckpt}", torch.device("cpu"))
    img = Image.new("RGB", (16, 16), (200, 30, 30))
    a = scorer([img, img], ["a red square", "a photo of a dog on the beach"])
    assert torch.isfinite(a).all() and a[0] != a[1]
    assert torch.equal(a, scorer([img, img], ["a red square", "a photo of a dog on the beach"]))
    with pytest.raises(
        SynthsetError, match="open_clip:<architecture or config .json>@<local checkpoint"
    ):
        ClipScorer("open_clip:synthset-tiny-clip@/no/such/file.pt", torch.device("cpu"))


def test_pipeline_runs_fidelity_after_cas_and_redoes_only_it(tmp_path: Path) -> None:
    from synthset.pipeline import run_all
    from synthset.recipe import recipe_from_dict

    make_samples(tmp_path / "real" / "train", 12, 0)
    make_samples(tmp_path / "real" / "test", 4, 1)
    make_samples(tmp_path / "syn", 8, 2)

    def recipe(k: int) -> Any:
        evaluate = {"synthetic_dir": str(tmp_path / "syn"), "train_sets": ["real"]}
        evaluate |= {
            "epochs": 2,
            "batch_size": 16,
            "fidelity": {"k": k, "kid_subsets": 5, "classifier_epochs": 2},
        }
        return recipe_from_dict(
            {
                "output_dir": str(tmp_path / "run"),
                "classes": {"imagefolder": str(tmp_path / "real" / "train")},
                "real": {"source": "imagefolder", "path": str(tmp_path / "real")},
                "evaluate": evaluate,
                "report": {"enabled": False},
            }
        )

    run = run_all(recipe(k=2), progress=False)
    cas, fidelity = run.evaluate / "cas.json", run.evaluate / "fidelity.json"
    first = json.loads(fidelity.read_text())
    assert first["n_synthetic"] == 24 and first["config"]["k"] == 2
    assert set(first["per_class"]) == set(NAMES)
    cas_at = cas.stat().st_mtime_ns
    run_all(recipe(k=3), progress=False)
    assert cas.stat().st_mtime_ns == cas_at  # CAS is not redone for a fidelity setting
    assert json.loads(fidelity.read_text())["config"]["k"] == 3


def test_evaluate_does_not_generate_only_for_the_metrics(tmp_path: Path) -> None:
    from synthset.cli import bundled_recipe
    from synthset.pipeline import open_run, stage_evaluate
    from synthset.recipe import load_recipe

    overrides = ["evaluate.train_sets=[real]", "evaluate.epochs=1", "evaluate.seeds=[0]"]
    overrides += ["evaluate.fidelity.enabled=true"]
    recipe = load_recipe(bundled_recipe("digits"), [f"output_dir={tmp_path / 'run'}", *overrides])
    run = open_run(recipe)
    assert stage_evaluate(recipe, run, progress=False) is not None  # CAS on real only
    assert not run.images.exists() and not run.adapt.exists()
    assert not (run.evaluate / "fidelity.json").exists()
