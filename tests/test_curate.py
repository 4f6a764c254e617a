"""Curation: scores that find bad images, a leak check that finds copied evaluation images, a
view that evaluation follows, rules chosen on val without reading test, one-line errors."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import FAST_CURATE as FAST
from helpers import TOY_DIGITS as TOY
from helpers import copy_run
from helpers import toy_digits as toy
from PIL import Image

from synthset.curate.base import ScoringContext
from synthset.curate.similarity import best_match, grey
from synthset.data.splits import load_splits
from synthset.errors import SynthsetError
from synthset.evaluate.tensors import to_array
from synthset.pipeline import StageLog, run_all, run_stage, stage_curate
from synthset.recipe import CurateSpec, load_recipe, recipe_from_dict
from synthset.store.atomic import read_jsonl
from synthset.store.run_folder import RunFolder


def view(out: Path) -> list[dict[str, Any]]:
    return read_jsonl(out / "curate" / "kept.jsonl")


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "curate" / "curate.json").read_text())


def shifted(img: np.ndarray) -> np.ndarray:
    out = np.zeros_like(img)
    out[:, 1:] = img[:, :-1]
    return out


def jpeg(img: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=75)
    return np.asarray(Image.open(buf).convert("L"))


# ----------------------------------------------------------------------------- similarity


def test_similarity_finds_shifted_and_reencoded_copies_but_not_other_digits() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * 255 / 16).astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    test, train = images[order[:450]], images[order[450:]]

    def prep(arrays: Any) -> torch.Tensor:
        return grey(torch.tensor(np.stack([to_array(Image.fromarray(a), 8, 1) for a in arrays])))

    refs = prep(test)
    for change in (lambda a: a, shifted, jpeg, lambda a: jpeg(shifted(a))):
        sim, idx = best_match(prep([change(a) for a in test[:60]]), refs, 1)
        assert float(sim.min()) >= 0.99  # LeakSpec.similarity's default
        assert torch.equal(idx, torch.arange(60))  # matched to its own original
    other, _ = best_match(prep(train), refs, 1)
    assert float(other.max()) < 0.99  # no distinct digit counts as a copy
    assert float(other.median()) < 0.95


# ----------------------------------------------------------------------------- scorers


def _context(out: Path, rows: list[dict[str, Any]], cache: Path, **spec: Any) -> ScoringContext:
    """Scoring ``rows`` against ``out``'s real split; the reference classifier kept in ``cache``."""
    real = load_splits(out / "real" / "splits.json", names=("train", "val"))
    return ScoringContext(
        spec=CurateSpec(**spec),
        synthetic=rows,
        real=real,
        class_names=[str(i) for i in range(10)],
        cache_dir=cache,
        tensor_cache=None,
        device=torch.device("cpu"),
        seed=0,
        progress=False,
    )


def _auroc(good: np.ndarray, bad: np.ndarray) -> float:
    """P(a good image outscores a bad one)."""
    return float((good[:, None] > bad[None, :]).mean())


def test_label_agreement_and_typicality_score_wrong_and_broken_images_low(
    generated: Path, tmp_path: Path
) -> None:
    from synthset.curate.label_agreement import LabelAgreement
    from synthset.curate.typicality import Typicality

    real = load_splits(generated / "real" / "splits.json", names=("train",))["train"]
    good = real[:60]
    rng = np.random.default_rng(0)
    rows = [{"item_id": f"good{i}", "path": p, "label": lbl} for i, (p, lbl) in enumerate(good)]
    rows += [  # the same real digits under a wrong label
        {"item_id": f"wrong{i}", "path": p, "label": (lbl + 1 + i % 9) % 10}
        for i, (p, lbl) in enumerate(good)
    ]
    for i in range(60):  # noise: not a digit at all
        path = tmp_path / f"noise{i}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(path)
        rows.append({"item_id": f"noise{i}", "path": path, "label": i % 10})
    ctx = _context(generated, rows, tmp_path, epochs=8)
    agree = LabelAgreement(ctx.spec).score(ctx)
    typical = Typicality(ctx.spec).score(ctx)
    assert agree.shape == typical.shape == (180,) and np.isfinite(typical).all()
    assert ((agree >= 0) & (agree <= 1)).all()
    assert _auroc(agree[:60], agree[60:120]) > 0.9  # wrong labels disagree
    assert _auroc(typical[:60], typical[120:]) > 0.9  # noise is atypical
    assert _auroc(typical[:60], typical[60:120]) > 0.8  # and so is a digit under another label


@pytest.mark.parametrize("library", ["transformers", "open_clip"])
def test_clip_scorer_prefers_images_matching_their_class(tmp_path: Path, library: str) -> None:
    """A tiny CLIP of each library, built offline, saved and loaded by the path users give."""
    from synthset.curate.clip import ClipScore
    from synthset.testing import build_trained_tiny_clip, build_trained_tiny_open_clip

    if library == "open_clip":
        folder = build_trained_tiny_open_clip(tmp_path / "oc")
    else:
        folder = str(build_trained_tiny_clip(tmp_path))
    rows = []
    for i, (value, label) in enumerate([(250, 0), (10, 1), (240, 1), (20, 0)]):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (16, 16), (value, value, value)).save(path)
        rows.append({"item_id": str(i), "path": path, "label": label})
    ctx = ScoringContext(
        spec=CurateSpec(scorers=["clip"], clip_model=str(folder), clip_templates=["{class}"]),
        synthetic=rows,
        real={},
        class_names=["white", "black"],
        cache_dir=tmp_path,
        tensor_cache=None,
        device=torch.device("cpu"),
        seed=0,
        progress=False,
    )
    scores = ClipScore(ctx.spec).score(ctx)
    assert scores[0] > scores[2] and scores[1] > scores[3]  # right label beats wrong label
    assert np.array_equal(scores, ClipScore(ctx.spec).score(ctx))


# ----------------------------------------------------------------------------- the stage


def _plant_copies(out: Path) -> dict[str, str]:
    """Overwrite three synthetic images with real test images (as is, shifted one pixel, JPEG
    re-encoded); returns item id → the real file's name."""
    test = load_splits(out / "real" / "splits.json", names=("test",))["test"]
    rows = read_jsonl(out / "images" / "metadata.jsonl")
    planted = {}
    changes = (lambda a: a, shifted, jpeg)
    for (path, _), row, change in zip(test[:3], rows[:21:7], changes, strict=True):
        pixels = change(np.asarray(Image.open(path).convert("L")))
        Image.fromarray(pixels).save(out / "images" / row["file_name"])
        planted[row["item_id"]] = Path(path).name
    return planted


def test_copies_of_test_images_are_dropped_as_leaks_and_reported(
    generated: Path, tmp_path: Path
) -> None:
    out = copy_run(generated, tmp_path)
    planted = _plant_copies(out)
    result = stage_curate(toy(out, {"scorers": ["label_agreement"]}), RunFolder(out), False)
    assert result is not None
    leaks = {r["item_id"]: r["reason"] for r in view(out) if not r["kept"]}
    assert leaks == dict.fromkeys(planted, "leak:test")
    assert result["leaks"] == 3
    assert {m["item_id"]: m["real_image"] for m in result["leak_matches"]} == planted
    assert all(m["similarity"] >= 0.99 for m in result["leak_matches"])


def test_phash_codes_agree_with_imagehash_and_survive_reencoding() -> None:
    """The pHash codes' dot product is imagehash's share of equal bits; on 64 px natural-like
    images a JPEG re-encode stays close (>= 0.9) while other images do not (< 0.8)."""
    import imagehash
    from scipy.ndimage import gaussian_filter

    from synthset.curate.compare import phash_codes

    rng = np.random.default_rng(0)
    smooth = [gaussian_filter(rng.random((64, 64)), 3) for _ in range(12)]
    images = [np.uint8(255 * (a - a.min()) / (a.max() - a.min())) for a in smooth]
    stack = torch.from_numpy(np.stack([*images, *(jpeg(a) for a in images)]))[:, None]
    codes = phash_codes(stack)
    hashes = [imagehash.phash(Image.fromarray(a.numpy()[0])) for a in stack]
    for i, j in [(0, 1), (2, 14), (5, 9), (3, 3)]:
        assert float(codes[i] @ codes[j]) == pytest.approx(1 - (hashes[i] - hashes[j]) / 64)
    sim = (codes[:12] @ codes[12:].T).numpy()
    assert sim.diagonal().min() >= 0.9  # each image and its JPEG copy
    assert sim[~np.eye(12, dtype=bool)].max() < 0.8  # any two different images


def test_phash_and_features_leak_check_and_dedup_drop_exact_copies(
    generated: Path, tmp_path: Path
) -> None:
    """compare_by phash / features: a real test image planted as is is a leak (similarity 1),
    and a synthetic image copied onto another of its class is dropped by dedup."""
    out = copy_run(generated, tmp_path)
    planted = _plant_copies(out)
    exact = next(iter(planted))  # the unchanged copy
    rows = read_jsonl(out / "images" / "metadata.jsonl")
    source, twin = [r for r in rows if r["label"] == rows[1]["label"]][1:3]
    shutil.copyfile(out / "images" / source["file_name"], out / "images" / twin["file_name"])
    for method, leak_at in (("phash", 1.0), ("features", 0.99999)):
        settings = {
            "scorers": ["label_agreement"],
            "compare_by": method,
            "leak_check": {"similarity": leak_at},
            "dedup_similarity": 0.99999,
        }
        result = stage_curate(toy(out, settings), RunFolder(out), False)
        assert result is not None
        reasons = {r["item_id"]: r["reason"] for r in view(out) if not r["kept"]}
        assert reasons.get(exact) == "leak:test", (method, reasons)
        assert reasons.get(twin["item_id"]) == "duplicate", (method, reasons)
        assert source["item_id"] not in reasons
        match = next(m for m in result["leak_matches"] if m["item_id"] == exact)
        assert match["real_image"] == planted[exact] and match["similarity"] >= leak_at


def test_evaluation_trains_on_the_view_and_a_new_rule_does_not_rescore(
    generated: Path, tmp_path: Path
) -> None:
    out = copy_run(generated, tmp_path)
    rule = {"score": "typicality", "percentile": 50}
    log = StageLog()
    before_after = "evaluate.train_sets=[synthetic, uncurated]"
    run_all(toy(out, {"rules": [rule]}, before_after), progress=False, log=log)
    assert log.status("curate") == "ran" and log.status("evaluate") == "ran"
    kept = [r for r in view(out) if r["kept"]]
    assert len(kept) == 60  # half of each class's 12
    cas = json.loads((out / "evaluate" / "cas.json").read_text())
    assert cas["train_sets"]["synthetic"]["summary"]["n_synthetic"] == 60
    assert cas["train_sets"]["uncurated"]["summary"]["n_synthetic"] == 120
    scores = out / "curate" / "scores.jsonl"
    stamp = scores.stat().st_mtime_ns

    log = StageLog()
    run_all(toy(out, {"rules": [rule | {"percentile": 25}]}), progress=False, log=log)
    assert log.status("curate") == "ran" and log.status("evaluate") == "ran"
    assert scores.stat().st_mtime_ns == stamp  # the scores were reused
    assert sum(r["kept"] for r in view(out)) == 90
    cas = json.loads((out / "evaluate" / "cas.json").read_text())
    assert cas["train_sets"]["synthetic"]["summary"]["n_synthetic"] == 90
    dropped = [r for r in view(out) if not r["kept"]]
    assert {r["reason"] for r in dropped} == {"rule1:typicality:percentile=25"}
    # each dropped image scores no better than every kept one of its class
    for r in dropped:
        same = [k["typicality"] for k in view(out) if k["kept"] and k["label"] == r["label"]]
        assert r["typicality"] <= min(same)

    recipe = toy(out, {"rules": [rule | {"percentile": 25}]})
    log = StageLog()
    run_all(recipe, progress=False, log=log)
    assert log.status("curate") == "skipped" and log.status("evaluate") == "skipped"

    from synthset.stages import write_run_report

    write_run_report(recipe, RunFolder(out))
    html = (out / "report.html").read_text()
    assert '<h2 id="curation">' in html and "Kept <b>90</b> of 120" in html
    assert "dropped: rule1:typicality" in html and "Lowest and highest typicality" in html


def test_auto_percentile_is_chosen_without_reading_the_test_split(
    generated: Path, tmp_path: Path
) -> None:
    out = copy_run(generated, tmp_path)
    rules = {"rules": [{"score": "label_agreement", "percentile": "auto"}]}
    hidden = out / "real" / "test.hidden"
    (out / "real" / "test").rename(hidden)
    try:  # the test images are gone while curate runs: any read of one would fail
        with pytest.raises(SynthsetError, match="test"):  # the leak check does read test
            stage_curate(toy(out, rules), RunFolder(out), False)
        no_test = rules | {"leak_check": {"splits": ["val"]}}
        result = stage_curate(toy(out, no_test), RunFolder(out), False)
    finally:
        hidden.rename(out / "real" / "test")
    assert result is not None
    auto = result["auto"]["0"]
    assert set(auto["val_accuracy"]) == {"0", "10", "20", "30", "40", "50"}
    best = max(auto["val_accuracy"].values())
    assert auto["val_accuracy"][f"{auto['chosen']:g}"] == best
    assert result["kept"] == sum(r["kept"] for r in view(out))


def test_near_duplicates_within_a_class_are_dropped(generated: Path, tmp_path: Path) -> None:
    out = copy_run(generated, tmp_path)
    rows = read_jsonl(out / "images" / "metadata.jsonl")
    first, second = rows[0], rows[5]  # the same class, in item order
    assert first["label"] == second["label"]
    shutil.copyfile(out / "images" / first["file_name"], out / "images" / second["file_name"])
    curate = {
        "scorers": ["label_agreement"],
        "dedup_similarity": 0.99,
        "leak_check": {"splits": []},
    }
    stage_curate(toy(out, curate), RunFolder(out), False)
    dropped = {r["item_id"]: r["reason"] for r in view(out) if not r["kept"]}
    assert dropped.get(second["item_id"]) == "duplicate"
    assert first["item_id"] not in dropped


# ----------------------------------------------------------------------------- bad input


def _recipe(curate: dict[str, Any]) -> dict[str, Any]:
    return {
        "classes": {"dataset": "digits"},
        "real": {"source": "digits"},
        "generate": {"generator": {"kind": "tiny", "model": "m"}},
        "curate": curate,
    }


@pytest.mark.parametrize(
    ("curate", "fragment"),
    [
        ({"scorers": ["sharpness"]}, "curate.scorers.0"),
        (
            {"rules": [{"score": "label_agreement", "threshold": 1.5}]},
            "a label_agreement threshold is a probability",
        ),
        ({"rules": [{"score": "typicality", "percentile": 120}]}, "percentile must be in [0, 100)"),
        ({"scorers": ["clip"]}, "scorer 'clip' needs curate.clip_model"),
        (
            {"scorers": ["typicality"], "rules": [{"score": "label_agreement", "top_k": 3}]},
            "add it to curate.scorers",
        ),
        ({"rules": [{"score": "typicality"}]}, "give exactly one of threshold"),
    ],
)
def test_bad_curate_settings_are_one_line_errors(curate: dict, fragment: str) -> None:
    with pytest.raises(SynthsetError) as err:
        recipe_from_dict(_recipe(curate))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_rule_that_empties_a_class_names_it_and_its_best_score(
    generated: Path, tmp_path: Path
) -> None:
    out = copy_run(generated, tmp_path)
    curate = {"rules": [{"score": "label_agreement", "threshold": 1.0}]}
    with pytest.raises(SynthsetError) as err:
        stage_curate(toy(out, curate), RunFolder(out), False)
    msg = str(err.value)
    assert "of class '0'" in msg and "its best scores: label_agreement" in msg
    assert "\n" not in msg


def test_a_missing_clip_model_is_a_one_line_error(generated: Path, tmp_path: Path) -> None:
    out = copy_run(generated, tmp_path)
    curate = {"scorers": ["clip"], "clip_model": str(tmp_path / "no-clip")}
    with pytest.raises(SynthsetError) as err:
        stage_curate(toy(out, curate), RunFolder(out), False)
    assert str(err.value).startswith("curate.clip_model") and "\n" not in str(err.value)


def test_overgeneration_keeps_the_best_planned_count_per_class(
    generated: Path, tmp_path: Path
) -> None:
    """overgenerate 1.5 plans 18 per class (the first 12 are the same items as without it);
    curation keeps the 12 with the highest label agreement."""
    from synthset.cli import bundled_recipe

    out = copy_run(generated, tmp_path)
    curate = FAST | {"scorers": ["label_agreement"], "leak_check": {"splits": []}}
    recipe = load_recipe(
        bundled_recipe("digits"),
        [f"output_dir={out}", *TOY, "generate.overgenerate=1.5", f"curate={json.dumps(curate)}"],
    )
    log = StageLog()
    run_stage("curate", recipe, RunFolder(out), progress=False, log=log)
    assert log.status("adapt") == "skipped"  # same model
    rows = view(out)
    assert len(rows) == 180
    old = {r["item_id"] for r in read_jsonl(generated / "images" / "metadata.jsonl")}
    assert old < {r["item_id"] for r in rows}  # the first 12 per class are the same items
    for k in range(10):
        mine = sorted((r for r in rows if r["label"] == k), key=lambda r: -r["label_agreement"])
        assert [r["kept"] for r in mine] == [True] * 12 + [False] * 6
        assert {r["reason"] for r in mine[12:]} == {"selection:top_k"}


def test_overgeneration_without_curation_is_a_one_line_error() -> None:
    data = _recipe({}) | {"curate": None}
    data["generate"]["overgenerate"] = 1.2
    with pytest.raises(SynthsetError, match="generate.overgenerate makes spare images"):
        recipe_from_dict(data)


# ----------------------------------------------------------------------------- selection


def test_quotas_follow_the_weights_and_hand_on_what_a_generator_lacks() -> None:
    from synthset.curate.ensemble import quotas

    assert quotas(np.ones(3), 9, np.array([10, 10, 10])).tolist() == [3, 3, 3]
    assert quotas(np.ones(3), 10, np.array([2, 10, 10])).tolist() == [2, 4, 4]
    assert quotas(np.array([3.0, 1.0]), 8, np.array([10, 10])).tolist() == [6, 2]
    assert quotas(np.ones(2), 50, np.array([3, 4])).tolist() == [3, 4]  # all there is


def test_selection_modes_pick_by_share_score_and_complexity() -> None:
    from synthset.curate.ensemble import select_class

    idx = np.arange(12)
    members = np.array(["a"] * 6 + ["b"] * 6, dtype=object)
    rank = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.3, 0.2, 0.2, 0.1, 0.1])
    top = select_class("top_k", idx, 4, rank, members, 0.1)
    assert sorted(top.tolist()) == [0, 1, 2, 3]
    equal = select_class("equal", idx, 4, rank, members, 0.1)
    assert sorted(equal.tolist()) == [0, 1, 6, 7]  # two each, each generator's best
    hot = select_class("temperature", idx, 6, rank, members, 0.1)
    cold = select_class("temperature", idx, 6, rank, members, 10.0)
    assert sum(members[hot] == "a") > sum(members[cold] == "a") >= 3
    # complexity: mid-range typicality first, and never two copies of one image
    typical = np.array([-10, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 50], dtype=float)
    sim = np.eye(12)
    sim[5, 6] = sim[6, 5] = 1.0  # 5 and 6 are the same picture
    picked = select_class("complexity", idx, 4, rank, members, 0.1, typical, lambda i: sim[i][:, i])
    assert not {5, 6} <= set(picked.tolist())
    assert 0 not in picked and 11 not in picked  # the extremes stay out


def test_generator_ensemble_is_selected_in_equal_shares(generated: Path, tmp_path: Path) -> None:
    """Three tiny generators (different guidance), 30 per class; 'equal' keeps the same
    number from each generator in every class."""
    out = copy_run(generated, tmp_path)
    members = [
        {"name": f"g{i}", "kind": "tiny", "steps": 4, "guidance_scale": g}
        for i, g in enumerate((1.0, 2.0, 3.0))
    ]
    curate = FAST | {
        "scorers": ["label_agreement"],
        "selection": "equal",
        "target_per_class": 6,
        "leak_check": {"splits": []},
    }
    data = toy(out, curate).model_dump(mode="json", exclude_none=True)
    data["generate"] |= {"images_per_class": 30, "generators": members}
    del data["generate"]["generator"]
    recipe = recipe_from_dict(data)
    stage_curate(recipe, RunFolder(out), False)
    gen = {r["item_id"]: r["generator"] for r in read_jsonl(out / "images" / "metadata.jsonl")}
    for k in range(10):
        kept = [gen[r["item_id"]] for r in view(out) if r["kept"] and r["label"] == k]
        assert sorted(kept) == ["g0", "g0", "g1", "g1", "g2", "g2"]
    assert summary(out)["dropped_by_reason"] == {"selection:equal": 240}


def test_label_agreement_reads_globally_shifted_images_with_their_own_statistics(
    generated: Path, tmp_path: Path
) -> None:
    """Real digits made bolder and brighter (a generator's typical global shift): with the
    real-train batch-norm statistics the reference misreads many; re-estimated on the set
    (curate.batchnorm: synthetic, the default) it reads them as their class again."""
    from synthset.curate.label_agreement import LabelAgreement

    real = load_splits(generated / "real" / "splits.json", names=("val",))["val"]
    rows = []
    for i, (path, label) in enumerate(real):
        pixels = np.asarray(Image.open(path).convert("L")).astype(np.float64)
        bold = np.clip(pixels * 1.8 + 60, 0, 255).astype(np.uint8)
        out = tmp_path / f"bold{i}.png"
        Image.fromarray(bold).save(out)
        rows.append({"item_id": str(i), "path": out, "label": label})
    own = _context(generated, rows, tmp_path, epochs=8)
    kept_stats = _context(generated, rows, tmp_path, epochs=8, batchnorm="real")
    adapted = LabelAgreement(own.spec).score(own)
    fixed = LabelAgreement(kept_stats.spec).score(kept_stats)
    assert adapted.mean() > fixed.mean() + 0.1
    assert adapted.mean() > 0.6


def test_uncurated_needs_a_curate_section() -> None:
    data = _recipe({}) | {"curate": None, "evaluate": {"train_sets": ["uncurated"]}}
    with pytest.raises(SynthsetError, match="'uncurated' is the set before curation"):
        recipe_from_dict(data)


def test_auto_percentile_can_be_chosen_for_augmenting_real_data(
    generated: Path, tmp_path: Path
) -> None:
    """proxy_train_set real+synthetic: the proxies also train on the real train split, so
    keeping one synthetic image per class no longer starves them."""
    out = copy_run(generated, tmp_path)
    rule = {"score": "label_agreement", "percentile": "auto", "auto_percentiles": [0, 90]}
    trials = {}
    for train_set in ("synthetic", "real+synthetic"):
        curate = {"rules": [rule], "leak_check": {"splits": ["val"]}}
        curate |= {"proxy_train_set": train_set, "proxy_epochs": 6}
        result = stage_curate(toy(out, curate), RunFolder(out), False)
        assert result is not None
        assert result["auto"]["0"]["proxy_train_set"] == train_set
        trials[train_set] = result["auto"]["0"]["val_accuracy"]
    assert trials["real+synthetic"]["90"] > trials["synthetic"]["90"] + 0.2, trials


def test_curate_reruns_for_the_evaluate_settings_it_trains_with_only(
    generated: Path, tmp_path: Path
) -> None:
    """The reference classifier and the 'auto' proxies train with evaluate's settings: changing
    how real and synthetic mix reruns curate; which sets evaluate trains, or where, does not."""
    out = copy_run(generated, tmp_path)
    rule = {"score": "typicality", "percentile": 25}
    curate = {"rules": [rule], "leak_check": {"splits": ["val"]}}

    def status(*more: str) -> str | None:
        log = StageLog()
        run_stage("curate", toy(out, curate, *more), RunFolder(out), progress=False, log=log)
        return log.status("curate")

    assert status() == "ran"
    assert status("evaluate.train_sets=[synthetic, real+synthetic]", "evaluate.seeds=[1]") == (
        "skipped"
    )
    assert status("evaluate.workers=2") == "skipped"
    assert status("evaluate.real_batch_fraction=0.25") == "ran"
    assert status("evaluate.real_batch_fraction=0.25", "evaluate.mixed_epoch=union") == "ran"
    assert status("evaluate.real_batch_fraction=0.25", "evaluate.mixed_epoch=union") == "skipped"


def test_reference_scores_are_recomputed_when_the_reference_trains_differently(
    generated: Path, tmp_path: Path
) -> None:
    """label_agreement and typicality come from the reference classifier: a new learning rate
    retrains it and rescores both; an evaluate setting the reference never trains with (the
    train sets) keeps both columns, and the pixel leak check never depends on it."""
    out = copy_run(generated, tmp_path)
    curate = {
        "scorers": ["label_agreement", "typicality"],
        "rules": [{"score": "label_agreement", "percentile": 25}],
        "leak_check": {"splits": ["val"]},
    }
    meta = out / "curate" / "scores.json"

    def fingerprints(*more: str) -> dict[str, str]:
        stage_curate(toy(out, curate, *more), RunFolder(out), False)
        return {k: v["fp"] for k, v in json.loads(meta.read_text()).items()}

    first = fingerprints()
    assert set(first) >= {"label_agreement", "typicality"}
    same = fingerprints("evaluate.train_sets=[synthetic, real+synthetic]")
    assert same == first
    changed = fingerprints("evaluate.lr=0.0005")
    assert changed["label_agreement"] != first["label_agreement"]
    assert changed["typicality"] != first["typicality"]
    assert changed["leak_check"] == first["leak_check"]  # pixels: no reference involved


def test_a_low_data_study_curates_with_the_real_subset_the_generator_saw(
    generated: Path, tmp_path: Path
) -> None:
    """With ``adapt.real_subset`` the generator learned from part of real train; the curation
    reference classifier and proxies must learn from exactly that part, no more (the filter
    would carry the other real labels into the "real 10 % + synthetic" rows)."""
    from synthset.adapt.base import AdaptData
    from synthset.classes import read_classes
    from synthset.curate.run import scoring_context

    out = copy_run(generated, tmp_path)
    curate = {
        "scorers": ["label_agreement", "typicality"],
        "rules": [{"score": "label_agreement", "percentile": 25}],
        "leak_check": {"splits": ["val"]},
    }
    real_train = load_splits(out / "real" / "splits.json", names=("train",))["train"]

    def curated(*more: str) -> tuple[str | None, dict[str, Any]]:
        log = StageLog()
        run_stage("curate", toy(out, curate, *more), RunFolder(out), progress=False, log=log)
        return log.status("curate"), summary(out)

    status, full = curated()
    assert status == "ran" and full["real_train_images"] == len(real_train)
    assert full["real_subset"] is None
    status, low = curated("adapt.real_subset=0.25")
    assert status == "ran" and low["real_subset"] == 0.25
    assert abs(low["real_train_images"] - len(real_train) / 4) <= 10  # stratified per class

    recipe = toy(out, curate, "adapt.real_subset=0.25")
    assert recipe.adapt is not None
    ctx = scoring_context(recipe, RunFolder(out), [], progress=False)
    seen = AdaptData.for_spec(recipe.adapt, real_train, read_classes(out / "classes.json")).train
    assert ctx.real["train"] == seen and len(seen) == low["real_train_images"]
    assert ctx.reference_settings()["real_subset"] == 0.25  # part of the score columns' key
    plain = scoring_context(toy(out, curate), RunFolder(out), [], progress=False)
    assert "real_subset" not in plain.reference_settings()  # older runs keep their columns
    assert curated("adapt.real_subset=0.25")[0] == "skipped"
