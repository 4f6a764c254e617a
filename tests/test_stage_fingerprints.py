"""A stage reruns exactly when something it reads changes: its recipe sections or the files the
stages before it wrote (regression: CAS and fidelity were kept after the synthetic set grew)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthset.pipeline import StageLog, run_all
from synthset.recipe import Recipe, load_recipe
from synthset.store.atomic import read_jsonl

#: The digits demo at toy size, with the fidelity metrics on (a small real-digit extractor).
TOY = [
    "adapt.image_size=8",
    "adapt.channels=[8, 16]",
    "adapt.steps=20",
    "adapt.batch_size=32",
    "generate.images_per_class=6",
    "generate.batch_size=30",
    "generate.generator.steps=4",
    "evaluate.epochs=1",
    "evaluate.seeds=[0]",
    "evaluate.fidelity.enabled=true",
    "evaluate.fidelity.classifier_epochs=1",
    "evaluate.fidelity.kid_subsets=2",
    "report.samples_per_class=1",
]


def toy(out: Path, *more: str) -> Recipe:
    from synthset.cli import bundled_recipe

    return load_recipe(bundled_recipe("digits"), [f"output_dir={out}", *TOY, *more])


def run_logged(recipe: Recipe) -> dict[str, str]:
    log = StageLog()
    run_all(recipe, progress=False, log=log)
    return {name: status for name, status, _ in log.entries}


def cas(out: Path) -> dict:
    return json.loads((out / "evaluate" / "cas.json").read_text())


def fidelity(out: Path) -> dict:
    return json.loads((out / "evaluate" / "fidelity.json").read_text())


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fingerprints") / "run"
    statuses = run_logged(toy(out))
    assert statuses["evaluate"] == "ran" and statuses["generate"] == "ran"
    return out


def test_an_unchanged_rerun_skips_every_stage(finished: Path) -> None:
    before = {
        p: p.read_bytes() for p in (finished / "evaluate" / "cas.json", finished / "report.html")
    }
    statuses = run_logged(toy(finished))
    absent = {"tune", "curate", "labels", "export", "retrieve", "continual"}  # none here
    assert {statuses[name] for name in absent} == {"off"}
    assert {s for name, s in statuses.items() if name not in absent} == {"skipped"}, statuses
    assert {p: p.read_bytes() for p in before} == before


def test_more_images_per_class_reruns_cas_and_fidelity(finished: Path) -> None:
    assert cas(finished)["train_sets"]["synthetic"]["summary"]["n_train"] == 60
    statuses = run_logged(toy(finished, "generate.images_per_class=9"))
    assert statuses["generate"] == "ran" and statuses["evaluate"] == "ran"
    assert cas(finished)["train_sets"]["synthetic"]["summary"]["n_train"] == 90
    assert fidelity(finished)["n_synthetic"] == 90
    # and back: the 60 images are still in the manifest, only evaluation reruns
    statuses = run_logged(toy(finished))
    assert statuses["evaluate"] == "ran"
    generated = json.loads((finished / "stages" / "generate.json").read_text())["generated"]
    assert statuses["generate"] == "ran" and generated == 0  # only the index was rewritten
    assert cas(finished)["train_sets"]["synthetic"]["summary"]["n_train"] == 60


def test_another_prompt_template_reruns_cas(finished: Path) -> None:
    marker = finished / "stages" / "evaluate.json"
    before = json.loads(marker.read_text())["fingerprint"]
    statuses = run_logged(toy(finished, "prompts.template=a drawing of the digit {class}"))
    assert statuses["prompts"] == "ran" and statuses["evaluate"] == "ran"
    assert json.loads(marker.read_text())["fingerprint"] != before
    prompts = {r["prompt"] for r in read_jsonl(finished / "images" / "metadata.jsonl")}
    assert "a drawing of the digit 3" in prompts
    run_logged(toy(finished))  # leave the module's run as it was


def test_other_real_split_fractions_rerun_cas(finished: Path) -> None:
    n_real = cas(finished)["train_sets"]["real"]["summary"]["n_train"]
    statuses = run_logged(toy(finished, "real.val_fraction=0.3"))
    assert statuses["data"] == "ran" and statuses["evaluate"] == "ran"
    assert cas(finished)["train_sets"]["real"]["summary"]["n_train"] < n_real
    run_logged(toy(finished))


def test_status_says_which_stages_an_edit_makes_stale(finished: Path) -> None:
    """``synthset status`` follows the table: a stage is stale when its own inputs changed or
    a stage it needs is stale, even before anything reran."""
    import os
    import subprocess
    import sys

    from synthset.cli import bundled_recipe

    def status(*more: str) -> dict[str, str]:
        args = [sys.executable, "-m", "synthset.cli", "status", str(bundled_recipe("digits"))]
        for item in [f"output_dir={finished}", *TOY, *more]:
            args += ["--set", item]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
        res = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode == 0, res.stderr
        rows = [line.strip("│ ").split("│") for line in res.stdout.splitlines() if "│" in line]
        return {cells[0].strip(): cells[-1].strip() for cells in rows if len(cells) >= 2}

    now = status()
    assert now["evaluate"] == "done" and now["report"] == "done" and now["tune"] == "not in recipe"
    edited = status("generate.images_per_class=7")
    assert edited["prompts"] == "done" and edited["adapt"] == "done"
    for stage in ("plan", "generate", "evaluate", "fidelity", "report"):
        assert edited[stage].startswith("stale"), (stage, edited[stage])
