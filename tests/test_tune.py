"""synthset tune: a real Optuna study with SQLite storage on toy sizes; val-only objective, the
test split never read, one-line errors for bad spaces, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from synthset.errors import SynthsetError
from synthset.pipeline import open_run, stage_data, stage_tune
from synthset.recipe import Recipe, load_recipe, recipe_from_dict
from synthset.store.run_folder import RunFolder
from synthset.tune.study import tune_splits

SPACE = {
    "generate.generator.guidance_scale": {"low": 0.5, "high": 3.0},
    "generate.generator.steps": {"choices": [3, 6]},
}


def toy(out: Path, **tune: Any) -> dict[str, Any]:
    return {
        "name": "tune-toy",
        "seed": 1,
        "output_dir": str(out),
        "classes": {"dataset": "digits"},
        "real": {"source": "digits"},
        "adapt": {"image_size": 8, "channels": [8, 16], "steps": 20, "batch_size": 32},
        "prompts": {"template": "{class}"},
        "generate": {
            "images_per_class": 50,
            "batch_size": 50,
            "generator": {"kind": "tiny", "steps": 5, "scheduler": "ddim", "save_size": 8},
        },
        "evaluate": {"classifier": "small_cnn", "batch_size": 32, "device": "cpu"},
        "tune": {"space": SPACE, "n_trials": 3, "images_per_class": 5, "proxy_epochs": 3} | tune,
    }


def run_tune(recipe: Recipe) -> dict[str, Any]:
    """The study through the pipeline: the stages it needs first, then the study."""
    result = stage_tune(recipe, open_run(recipe), progress=False)
    assert result is not None
    return result


def finished(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["state"] in ("COMPLETE", "PRUNED")]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """A 3-trial study on the digits whose real test split was destroyed before tuning."""
    out = tmp_path_factory.mktemp("tune") / "run"
    recipe = recipe_from_dict(toy(out))
    run = open_run(recipe)
    stage_data(recipe, run)
    # the test split is gone: any attempt to read it would fail with "image file not found"
    shutil.rmtree(run.real / "test")
    splits = json.loads((run.real / "splits.json").read_text())
    splits["test"] = [["test/nowhere/missing.png", 0]]
    (run.real / "splits.json").write_text(json.dumps(splits))
    result = run_tune(recipe)
    return result, out


def test_toy_study_writes_trials_best_and_a_loadable_best_recipe(
    study: tuple[dict[str, Any], Path],
) -> None:
    result, out = study
    tune = out / "tune"
    rows = json.loads((tune / "trials.json").read_text())
    assert len(finished(rows)) == 3 and len(rows) == 3
    for row in rows:
        assert set(row) >= {"number", "state", "value", "params", "intermediate", "seconds"}
        assert set(row["params"]) == set(SPACE)
        assert 0.5 <= row["params"]["generate.generator.guidance_scale"] <= 3.0
        assert row["params"]["generate.generator.steps"] in (3, 6)
        # one intermediate val accuracy per proxy epoch (until pruned)
        assert 1 <= len(row["intermediate"]) <= 3
        assert all(0.0 <= v <= 1.0 for v in row["intermediate"].values())
        images = list((tune / "trials" / str(row["number"]) / "images").rglob("*.png"))
        assert len(images) == 10 * 5  # tune.images_per_class, not generate.images_per_class
    # trial 0 tries the recipe's own guidance (2.0, inside the range); steps 5 is not a choice
    assert rows[0]["params"]["generate.generator.guidance_scale"] == 2.0
    assert not (tune / "adapt").exists()  # no adapt knob: every trial used the base model
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    top = max(complete, key=lambda r: r["value"])
    best = json.loads((tune / "best.json").read_text())
    assert best["value"] == pytest.approx(top["value"]) == pytest.approx(result["value"])
    assert best["params"] == top["params"]
    assert best["n_trials"] == 3 and "val" in best["metric"]
    # the objective is the best per-epoch val accuracy the trial reported
    assert top["value"] == pytest.approx(max(top["intermediate"].values()))

    tuned = load_recipe(tune / "best_recipe.yaml")
    assert tuned.generate is not None
    gen = tuned.generate.generator
    assert gen.guidance_scale == pytest.approx(best["params"]["generate.generator.guidance_scale"])
    assert gen.steps == best["params"]["generate.generator.steps"]
    assert tuned.generate.images_per_class == 50  # the full run's size is kept

    stored = optuna.load_study(
        study_name=optuna.get_all_study_names(f"sqlite:///{tune / 'study.db'}")[0],
        storage=f"sqlite:///{tune / 'study.db'}",
    )
    assert len(stored.trials) == 3
    assert stored.best_value == pytest.approx(best["value"])


def test_tuning_never_reads_the_test_split(study: tuple[dict[str, Any], Path]) -> None:
    _, out = study
    # the study above ran with the test images deleted; tune's loader drops the split unread
    assert not (out / "real" / "test").exists()
    assert set(tune_splits(RunFolder(out))) == {"train", "val"}


def test_rerun_tops_up_without_redoing_finished_trials(
    study: tuple[dict[str, Any], Path],
) -> None:
    _, out = study
    before = json.loads((out / "tune" / "trials.json").read_text())
    recipe = recipe_from_dict(toy(out, n_trials=4))  # only n_trials changed: same study
    run_tune(recipe)
    after = json.loads((out / "tune" / "trials.json").read_text())
    assert len(finished(after)) == 4
    assert after[:3] == before  # finished trials kept as they were, not redone


def test_two_stages_fix_the_first_stages_best(tmp_path: Path) -> None:
    stages = [
        {"generate.generator.guidance_scale": {"low": 0.5, "high": 3.0}},
        {"generate.generator.steps": {"choices": [3, 6]}},
    ]
    data = toy(tmp_path / "run", n_trials=2, pruner="none")
    del data["tune"]["space"]
    data["tune"]["stages"] = stages
    result = run_tune(recipe_from_dict(data))
    rows = json.loads((tmp_path / "run" / "tune" / "trials.json").read_text())
    assert [r["stage"] for r in rows] == [1, 1, 2, 2]
    stage1 = max(rows[:2], key=lambda r: r["value"])
    guidance = stage1["params"]["generate.generator.guidance_scale"]
    assert all(set(r["params"]) == {"generate.generator.steps"} for r in rows[2:])
    assert result["params"]["generate.generator.guidance_scale"] == guidance
    assert "generate.generator.steps" in result["params"]
    # stage 2's trials sampled with stage 1's best guidance fixed
    trials = tmp_path / "run" / "tune" / "trials"
    for row in rows[2:]:
        trial = load_recipe(trials / f"s2-{row['number']}" / "recipe.yaml")
        assert trial.generate is not None
        assert trial.generate.generator.guidance_scale == pytest.approx(guidance)


def test_adapt_knobs_retrain_once_per_setting_and_leave_the_base_model(tmp_path: Path) -> None:
    data = toy(tmp_path / "run", n_trials=3, pruner="none")
    data["tune"]["space"] = {"adapt.steps": {"choices": [8, 12]}}  # base: 20 steps
    recipe = recipe_from_dict(data)
    run = open_run(recipe)
    from synthset.pipeline import stage_adapt

    stage_adapt(recipe, run, progress=False)
    base_model = (run.adapt / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    run_tune(recipe)
    rows = json.loads((tmp_path / "run" / "tune" / "trials.json").read_text())
    used = {r["params"]["adapt.steps"] for r in rows}
    models = [p for p in (tmp_path / "run" / "tune" / "adapt").iterdir() if p.is_dir()]
    assert len(models) == len(used)  # one model per distinct adapt setting, shared by trials
    for row in rows:
        trial = load_recipe(
            tmp_path / "run" / "tune" / "trials" / str(row["number"]) / "recipe.yaml"
        )
        assert trial.adapt is not None and trial.adapt.steps == row["params"]["adapt.steps"]
    assert (run.adapt / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == base_model


def test_tune_picks_a_kept_checkpoint_without_retraining(tmp_path: Path) -> None:
    """adapt.checkpoint as a knob: trials generate with the artifacts the one adapt run kept
    (no model is trained for a trial), and the kept step's images differ from the final's."""
    from synthset.pipeline import stage_adapt, stage_generate
    from synthset.stages import generation_config

    data = toy(tmp_path / "run", n_trials=2, pruner="none")
    data["adapt"] |= {"steps": 30, "checkpoint_every": 10, "keep_checkpoints": True}
    data["tune"]["space"] = {"adapt.checkpoint": {"choices": [10, 20]}}
    recipe = recipe_from_dict(data)
    run = open_run(recipe)
    assert stage_adapt(recipe, run, progress=False)
    run_tune(recipe)
    assert not (tmp_path / "run" / "tune" / "adapt").exists()  # nothing retrained
    rows = json.loads((tmp_path / "run" / "tune" / "trials.json").read_text())
    assert {r["params"]["adapt.checkpoint"] for r in rows} <= {10, 20}

    picked = recipe_from_dict(data | {"adapt": data["adapt"] | {"checkpoint": 10}})
    assert not stage_adapt(picked, run, progress=False)  # the same training: not redone
    assert generation_config(picked) != generation_config(recipe)  # but new images
    stage_generate(picked, run, progress=False)
    image = sorted((run.images).rglob("*.png"))[0].read_bytes()
    stage_generate(recipe, run, progress=False)
    assert sorted((run.images).rglob("*.png"))[0].read_bytes() != image


@pytest.mark.parametrize(
    ("adapt", "fragment"),
    [
        ({"checkpoint": 10}, "checkpoint needs keep_checkpoints: true"),
        ({"checkpoint": 15, "keep_checkpoints": True}, "checkpoint 15 is not a kept step"),
    ],
)
def test_bad_checkpoint_is_a_one_line_error(
    tmp_path: Path, adapt: dict[str, Any], fragment: str
) -> None:
    data = toy(tmp_path / "run")
    data["adapt"] |= {"steps": 30, "checkpoint_every": 10} | adapt
    with pytest.raises(SynthsetError) as err:
        recipe_from_dict(data)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_recipe_values_only_inside_the_space() -> None:
    from synthset.recipe import TuneParam
    from synthset.tune.space import recipe_values

    recipe = recipe_from_dict(toy(Path("unused")))  # guidance 2.0, steps 5, scheduler ddim
    space = {
        "generate.generator.guidance_scale": TuneParam(low=0.5, high=3.0),
        "generate.generator.steps": TuneParam(low=1, high=9, step=2),
        "generate.generator.scheduler": TuneParam(choices=["euler", "ddim"]),
    }
    assert recipe_values(recipe, space) == {
        "generate.generator.guidance_scale": 2.0,
        "generate.generator.steps": 5,
        "generate.generator.scheduler": "ddim",
    }
    space["generate.generator.steps"] = TuneParam(low=2, high=10, step=4)  # 2, 6, 10
    space["generate.generator.guidance_scale"] = TuneParam(low=2.5, high=3.0)
    assert recipe_values(recipe, space) == {"generate.generator.scheduler": "ddim"}


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        ({"generate.generator.guidance": {"low": 1, "high": 2}}, "'generate.generator.guidance'"),
        ({"real.val_fraction": {"low": 0.1, "high": 0.2}}, "only knobs under generate"),
        ({"generate.generator": {"choices": [1]}}, "is a section"),
        ({"generate.generator.steps": {"low": 3}}, "give low and high"),
    ],
)
def test_bad_space_is_a_one_line_error(
    tmp_path: Path, space: dict[str, Any], fragment: str
) -> None:
    data = toy(tmp_path / "run")
    data["tune"]["space"] = space
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SynthsetError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert "\n" not in msg and fragment in msg and "tune.space" in msg


def test_bad_value_in_space_fails_before_any_work(tmp_path: Path) -> None:
    data = toy(tmp_path / "run")
    data["tune"]["space"] = {"generate.generator.steps": {"choices": [5, 0]}}
    recipe = recipe_from_dict(data)
    with pytest.raises(SynthsetError, match=r"tune.space generate.generator.steps=0 .*steps"):
        stage_tune(recipe, RunFolder(recipe.output_dir), progress=False)
    assert not (tmp_path / "run").exists()


def test_cli_bad_space_path_is_one_line(tmp_path: Path) -> None:
    data = toy(tmp_path / "run")
    data["tune"]["space"] = {"generate.steps": {"low": 1, "high": 2}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "300"}
    res = subprocess.run(
        [sys.executable, "-m", "synthset.cli", "tune", str(path)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "'generate.steps' is not a recipe field" in lines[0]


def _db_states(db: Path) -> list[str]:
    """Trial states in order; the running trial counts only once its values are stored."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            rows = con.execute(
                "SELECT state, (SELECT COUNT(*) FROM trial_params p WHERE p.trial_id = t.trial_id)"
                " FROM trials t ORDER BY number"
            ).fetchall()
    except sqlite3.Error:
        return []
    return [s if s != "RUNNING" or n == len(SPACE) else "STARTING" for s, n in rows]


@pytest.mark.slow  # CI time: run with pytest -m slow
def test_sigkill_mid_study_then_rerun_completes_without_redoing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(toy(out, n_trials=5, images_per_class=10, proxy_epochs=4)))
    cmd = [sys.executable, "-m", "synthset.cli", "tune", str(path), "-q"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = out / "tune" / "study.db"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            states = _db_states(db)
            if "COMPLETE" in states and states[-1] == "RUNNING":
                break  # at least one trial finished and the next one is running
            time.sleep(0.02)
        assert proc.poll() is None, "the study ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    killed = _db_states(db)
    assert killed[-1] == "RUNNING" and 1 <= killed.count("COMPLETE") < 5
    done_before = json.loads((out / "tune" / "trials.json").read_text())
    done_before = [r for r in done_before if r["state"] == "COMPLETE"]

    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads((out / "tune" / "trials.json").read_text())
    assert len(finished(rows)) == 5
    by_number = {r["number"]: r for r in rows}
    for old in done_before:  # finished trials were kept, not redone
        assert by_number[old["number"]] == old
    # the killed trial failed and was retried with its values, in the retry's folder
    lost = len(killed) - 1
    assert by_number[lost]["state"] == "FAIL"
    retries = [r for r in rows if r["number"] > lost and r["params"] == by_number[lost]["params"]]
    assert retries and retries[0]["state"] in ("COMPLETE", "PRUNED")
    assert not (out / "tune" / "trials" / str(lost)).exists()
    assert len(list((out / "tune" / "trials" / str(retries[0]["number"])).rglob("*.png"))) == 100
    assert load_recipe(out / "tune" / "best_recipe.yaml").tune is not None


def test_run_includes_the_study_and_the_report_shows_it(tmp_path: Path) -> None:
    from synthset.pipeline import StageLog, run_all

    spec = toy(tmp_path / "run", n_trials=2)
    spec["generate"]["images_per_class"] = 10
    spec["evaluate"] |= {"train_sets": ["synthetic"], "epochs": 2}
    spec["evaluate"]["fidelity"] = {"enabled": False}
    log = StageLog()
    run = run_all(recipe_from_dict(spec), progress=False, log=log)
    status = {name: state for name, state, _ in log.entries}
    assert status["tune"] == "ran"
    rows = json.loads((run.root / "tune" / "trials.json").read_text())
    assert len(finished(rows)) == 2
    assert "Optuna" in run.report.read_text()
    again = StageLog()
    run_all(recipe_from_dict(spec), progress=False, log=again)
    assert {name: state for name, state, _ in again.entries}["tune"] == "skipped"


@pytest.mark.parametrize(
    "generate",
    [
        {"generators": [{"name": "a", "kind": "tiny"}, {"name": "b", "kind": "tiny"}]},
        {"generator": {"kind": "tiny", "strength": 0.5}},
    ],
)
def test_tune_needs_one_text_conditioned_generator(
    tmp_path: Path, generate: dict[str, Any]
) -> None:
    data = toy(tmp_path / "run")
    data["generate"] = {"images_per_class": 5} | generate
    with pytest.raises(SynthsetError) as err:
        recipe_from_dict(data)
    assert "\n" not in str(err.value) and "'tune' searches one" in str(err.value)


def test_trials_of_a_curating_recipe_train_on_what_curation_keeps(tmp_path: Path) -> None:
    """Each trial's proxy sees only the images its curation keeps (half, by a fixed rule); the
    leak check looks at val only, so a destroyed test split is never missed."""
    data = toy(tmp_path / "run", n_trials=1)
    data["curate"] = {
        "scorers": ["typicality"],
        "rules": [{"score": "typicality", "percentile": 50}],
        "epochs": 2,
    }
    recipe = recipe_from_dict(data)
    run = open_run(recipe)
    stage_data(recipe, run)
    shutil.rmtree(run.real / "test")  # tuning must not need it, curation included
    run_tune(recipe)
    views = sorted((tmp_path / "run" / "tune").rglob("curate/kept.jsonl"))
    assert len(views) == 1
    for view in views:
        rows = [json.loads(line) for line in view.read_text().splitlines()]
        assert len(rows) == 50 and sum(r["kept"] for r in rows) == 30  # 5 per class → 3 kept
        assert {r["reason"] for r in rows if not r["kept"]} == {"rule1:typicality:percentile=50"}
