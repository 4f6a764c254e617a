"""Continual learning on a stream of classes (evaluate.continual): the reservoir, the A_auc
area, experience replay against no replay on the bundled digits, and the stage with its
one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli, copy_run
from helpers import toy_digits as toy
from PIL import Image

from synthset.data.real import digits_arrays
from synthset.errors import SynthsetError
from synthset.evaluate.continual import (
    DarkReplay,
    Reservoir,
    StreamResult,
    run_stream,
    task_classes,
)
from synthset.evaluate.tensors import TensorSet
from synthset.pipeline import StageLog, run_stage, stage_continual, stage_report
from synthset.recipe import ContinualSpec
from synthset.store.run_folder import RunFolder


def digits(indices: np.ndarray) -> TensorSet:
    images, labels = digits_arrays()
    return TensorSet(
        torch.from_numpy(images[indices])[:, None].to(torch.uint8),
        torch.from_numpy(labels[indices]).long(),
    )


def test_reservoir_keeps_a_uniform_sample_of_its_capacity() -> None:
    means = []
    for seed in range(20):
        r = Reservoir(100, seed)
        r.offer(list(range(10_000)))
        assert len(r.items) == 100 and len(set(r.items)) == 100 and r.seen == 10_000
        means.append(np.mean(r.items))
    assert abs(np.mean(means) - 5000) < 300  # uniform over the stream, not its start or end
    assert Reservoir(0, 0).sample(5) == []


def test_der_keeps_the_logits_of_exactly_the_buffered_images() -> None:
    labels = torch.arange(200) % 10
    spec = ContinualSpec(buffer_size=20, replay_batch_size=8, der_alpha=1.0, der_beta=0.5)
    buffer = Reservoir(20, seed=0)
    dark = DarkReplay(spec, labels, buffer)
    assert dark.sample() == ([], []) and dark.loss(torch.empty(0, 10), [], torch.empty(0), []) == 0
    for start in range(0, 200, 10):
        batch = list(range(start, start + 10))
        buffer.offer(batch)
        dark.remember(batch, torch.tensor(batch, dtype=torch.float)[:, None].repeat(1, 10))
    assert set(dark.logits) == set(buffer.items) and len(dark.logits) == 20
    assert all(float(z[0]) == i for i, z in dark.logits.items())  # each image's own logits
    first, second = dark.sample()
    assert len(first) == len(second) == 8 and set(first + second) <= set(buffer.items)
    # outputs equal to the stored logits: no MSE; the label term is der_beta x cross-entropy
    stored = torch.stack([dark.logits[i] for i in first])
    out_second = torch.randn(8, 10)
    ce = torch.nn.functional.cross_entropy(out_second, labels[second])
    assert float(dark.loss(stored, first, out_second, second)) == pytest.approx(0.5 * float(ce))
    mse = float(dark.loss(stored + 2.0, first, out_second, second)) - 0.5 * float(ce)
    assert mse == pytest.approx(4.0, rel=1e-5)  # der_alpha x (2.0)^2


def test_area_under_the_accuracy_curve_and_task_order() -> None:
    assert StreamResult.area([(100, 1.0), (200, 0.5)]) == pytest.approx(0.75)
    assert StreamResult.area([(50, 0.2), (200, 0.6)]) == pytest.approx((10 + 90) / 200)
    tasks = task_classes(10, 3, seed=4)
    assert [len(t) for t in tasks] == [3, 3, 3, 1]
    assert sorted(c for t in tasks for c in t) == list(range(10))
    assert tasks == task_classes(10, 3, seed=4) != task_classes(10, 3, seed=5)


def test_replay_buffer_beats_no_buffer_on_the_digits_stream() -> None:
    """Five tasks of two digits: without a buffer the learner forgets the earlier tasks (A_last
    near the last task's share, 0.2); experience replay with 100 images keeps most of them."""
    order = np.random.default_rng(0).permutation(1797)
    train, test = digits(order[:1000]), digits(order[1300:1600])
    spec = ContinualSpec(online_iterations=3, eval_every=100, buffer_size=100)
    er = run_stream(spec, "er", train, test, 10, seed=0, device="cpu")
    none = run_stream(spec, "finetune", train, test, 10, seed=0, device="cpu")
    assert er.a_last > 0.7, er.a_last
    assert none.a_last < er.a_last - 0.3, (none.a_last, er.a_last)
    assert StreamResult.area(er.curve) > StreamResult.area(none.curve)
    assert len(er.task_accuracy) == 5 and er.curve[-1][0] == 1000
    again = run_stream(spec, "er", train, test, 10, seed=0, device="cpu")
    assert again.curve == er.curve  # seeded: the same stream and learner
    # DER++ replays the stored logits and labels of its buffer: it too keeps the old tasks
    der = run_stream(spec, "der++", train, test, 10, seed=0, device="cpu")
    assert der.a_last > none.a_last + 0.3, (der.a_last, none.a_last)


def test_stage_streams_real_and_synthetic_then_skips(generated: Path, tmp_path: Path) -> None:
    out = copy_run(generated, tmp_path)
    setting = {"classes_per_task": 5, "seeds": [0, 1], "eval_every": 40, "online_iterations": 2}
    recipe = toy(out, None, f"evaluate.continual={json.dumps(setting)}")
    result = stage_continual(recipe, RunFolder(out), progress=False)
    assert result is not None
    assert set(result["streams"]) == {"real", "synthetic"}
    assert [len(t) for t in result["config"]["tasks"]] == [5, 5]
    runs = result["streams"]["synthetic"]["er"]["runs"]
    assert [r["seed"] for r in runs] == [0, 1] and len(runs[0]["task_accuracy"]) == 2
    assert runs[0]["curve"][-1][0] == 120  # 12 synthetic images of each of 10 classes
    summary = result["streams"]["real"]["er"]["summary"]
    assert 0 <= summary["a_last"]["mean"] <= 1 and summary["a_auc"]["std"] >= 0
    assert json.loads((out / "evaluate" / "continual.json").read_text()) == result
    log = StageLog()
    run_stage("continual", recipe, RunFolder(out), progress=False, log=log)
    assert log.status("continual") == "skipped"
    # the report's section: the table and one chart of the curves
    with_report = toy(out, None, f"evaluate.continual={json.dumps(setting)}", "report.enabled=true")
    report = stage_report(with_report, RunFolder(out))
    assert report is not None
    section = report.read_text().split('<h2 id="continual">', 1)[1].split("<h2", 1)[0]
    assert "A_auc" in section and "synthetic" in section and "real" in section
    assert section.count("data:image/png;base64,") == 1


def test_ood_test_set_and_bad_settings_are_one_line(generated: Path, tmp_path: Path) -> None:
    out = copy_run(generated, tmp_path)
    ood = tmp_path / "ood"
    images, labels = digits_arrays()
    for i in range(60):  # inverted digits: another domain, the same classes
        path = ood / str(int(labels[i])) / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - images[i]).save(path)
    setting = {"train_sets": ["real"], "classes_per_task": 5, "seeds": [0]}
    recipe = toy(out, None, f"evaluate.continual={json.dumps(setting)}", f"evaluate.ood_test={ood}")
    result = stage_continual(recipe, RunFolder(out), progress=False)
    assert result is not None
    run = result["streams"]["real"]["er"]["runs"][0]
    assert 0 <= run["ood_a_last"] <= 1 and run["ood_curve"][-1][0] == run["curve"][-1][0]

    (ood / "not-a-digit").mkdir()
    Image.fromarray(images[0]).save(ood / "not-a-digit" / "x.png")
    with pytest.raises(SynthsetError, match="ood_test") as err:
        stage_continual(recipe, RunFolder(out), False)
    assert "\n" not in str(err.value)
    shutil.rmtree(ood / "not-a-digit")
    bad = setting | {"classes_per_task": 10}
    with pytest.raises(SynthsetError, match="classes_per_task 10: the stream needs at least 2"):
        stage_continual(
            toy(out, None, f"evaluate.continual={json.dumps(bad)}"), RunFolder(out), False
        )


def test_the_verb_without_a_continual_section_is_one_line(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: x\nclasses: {dataset: digits}\nreal: {source: digits}\n"
        "evaluate: {train_sets: [real]}\n"
    )
    done = subprocess.run(
        cli("continual", str(recipe), "--out", str(tmp_path / "run")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "no 'evaluate.continual' section" in done.stderr and "Traceback" not in done.stderr
