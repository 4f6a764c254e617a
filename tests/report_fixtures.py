"""A complete run folder for report tests, written in the shared formats of
notes/eval_formats.md: cas.json with a scaling and a real-subset study, fidelity.json,
tune/, prompts.jsonl, stage markers and metrics.jsonl, on top of test_report.make_run's real and
synthetic images. Every number is drawn from a seeded generator; the tests recompute what the
report must show from these files, not from constants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from test_report import CLASSES, make_run

from synthset.recipe import Recipe
from synthset.store.atomic import atomic_write_json, atomic_write_text, write_jsonl
from synthset.store.run_folder import RunFolder

N_TEST_PER_CLASS = 4
N_REAL_TRAIN = 20
SEEDS = [0, 1, 2]
# label -> (kind, real_subset, synthetic_multiplier, real_batch_fraction)
STUDY: dict[str, tuple[str, float | None, float | None, float | None]] = {
    "real": ("real", None, None, None),
    "synthetic": ("synthetic", None, None, None),
    "real+synthetic": ("real+synthetic", None, None, 0.5),
    "synthetic x0.5": ("synthetic", None, 0.5, None),
    "synthetic x1": ("synthetic", None, 1.0, None),
    "synthetic x2": ("synthetic", None, 2.0, None),
    "synthetic x4": ("synthetic", None, 4.0, None),
    "real 25%": ("real", 0.25, None, None),
    "real 25%+synthetic": ("real+synthetic", 0.25, None, 0.5),
    "real 50%": ("real", 0.5, None, None),
    "real 50%+synthetic": ("real+synthetic", 0.5, None, 0.5),
}


def _run(rng: np.random.Generator, seed: int, n_train: int) -> dict[str, Any]:
    k = len(CLASSES)
    matrix = []
    for i in range(k):
        correct = int(rng.integers(1, N_TEST_PER_CLASS + 1))
        row = [0] * k
        row[i] = correct
        row[(i + 1) % k] += N_TEST_PER_CLASS - correct
        matrix.append(row)
    per_class = [matrix[i][i] / N_TEST_PER_CLASS for i in range(k)]
    epochs = 3
    val = [float(v) for v in np.sort(rng.uniform(0.3, 1.0, epochs))]
    return {
        "seed": seed,
        "test_accuracy": sum(matrix[i][i] for i in range(k)) / (k * N_TEST_PER_CLASS),
        "best_val_accuracy": max(val),
        "best_epoch": int(np.argmax(val)),
        "val_accuracy_history": val,
        "val_loss_history": [1.0 - v for v in val],
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix,
        "n_train": n_train,
        "seconds": float(rng.uniform(0.5, 2.0)),
    }


def _entry(
    rng: np.random.Generator, label: str, spec: tuple[str, float | None, float | None, float | None]
) -> dict[str, Any]:
    kind, subset, mult, fraction = spec
    n_real = 0 if kind == "synthetic" else int(N_REAL_TRAIN * (subset or 1.0))
    n_syn = 0 if kind == "real" else int(N_REAL_TRAIN * mult) if mult else 12
    runs = [_run(rng, s, n_real + n_syn) for s in SEEDS]
    accs = [r["test_accuracy"] for r in runs]
    k = len(CLASSES)
    summary = {
        "test_accuracy_mean": float(np.mean(accs)),
        "test_accuracy_std": float(np.std(accs)),
        "best_val_accuracy_mean": float(np.mean([r["best_val_accuracy"] for r in runs])),
        "n_train": n_real + n_syn,
        "n_seeds": len(runs),
        "kind": kind,
        "n_real": n_real,
        "n_synthetic": n_syn,
        "real_subset": subset,
        "synthetic_multiplier": mult,
        "real_batch_fraction": fraction,
        "per_class_accuracy_mean": [
            float(np.mean([r["per_class_accuracy"][i] for r in runs])) for i in range(k)
        ],
        "confusion_matrix": [
            [sum(r["confusion_matrix"][i][j] for r in runs) for j in range(k)] for i in range(k)
        ],
    }
    return {"runs": runs, "summary": summary}


def cas_json(seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "config": {
            "classifier": "small_cnn",
            "image_size": 8,
            "channels": 1,
            "epochs": 3,
            "batch_size": 8,
            "lr": 0.002,
            "weight_decay": 0.0005,
            "augment": True,
            "seeds": SEEDS,
            "device": "cpu",
            "class_names": [c.name for c in CLASSES],
            "n_val": 8,
            "n_test": N_TEST_PER_CLASS * len(CLASSES),
            "optimizer": "adamw",
        },
        "train_sets": {label: _entry(rng, label, spec) for label, spec in sorted(STUDY.items())},
    }


def _metrics(rng: np.random.Generator) -> dict[str, float]:
    return {
        "fid": float(rng.uniform(10, 90)),
        "kid_mean": float(rng.uniform(0, 0.1)),
        "kid_std": float(rng.uniform(0, 0.01)),
        "precision": float(rng.uniform()),
        "recall": float(rng.uniform()),
        "density": float(rng.uniform(0, 1.5)),
        "coverage": float(rng.uniform()),
        "diversity_real": float(rng.uniform(1, 5)),
        "diversity_synthetic": float(rng.uniform(1, 5)),
    }


def fidelity_json(seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    per_class = {c.name: _metrics(rng) for c in CLASSES}
    per_class[CLASSES[1].name]["fid"] = None  # a class too small for FID
    return {
        "extractor": "classifier:small_cnn-real",
        "feature_dim": 64,
        "n_real": N_REAL_TRAIN,
        "n_synthetic": 12,
        "overall": _metrics(rng),
        "per_class": per_class,
        "clip_score": {
            "model": "tiny-clip",
            "mean": float(rng.uniform(20, 30)),
            "per_class": {c.name: float(rng.uniform(20, 30)) for c in CLASSES},
        },
    }


def trials_json(seed: int = 2, n: int = 8) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    trials = []
    for i in range(n):
        pruned = i % 3 == 2
        steps = {str(s): float(rng.uniform(0.2, 0.9)) for s in range(2 if pruned else 3)}
        trials.append(
            {
                "number": i,
                "state": "PRUNED" if pruned else "COMPLETE",
                "value": None if pruned else float(rng.uniform(0.4, 0.95)),
                "params": {"guidance_scale": float(rng.uniform(1, 9)), "steps": int(4 + i)},
                "intermediate": steps,
                "seconds": float(rng.uniform(1, 5)),
            }
        )
    return trials


def make_full_run(tmp_path: Path) -> tuple[RunFolder, Recipe, dict[str, Any]]:
    """A run folder with every file the report can read; returns the inputs for checking."""
    run, recipe = make_run(tmp_path)
    cas = cas_json()
    fidelity = fidelity_json()
    trials = trials_json()
    done = [t for t in trials if t["state"] == "COMPLETE"]
    best = max(done, key=lambda t: t["value"])
    atomic_write_json(run.evaluate / "cas.json", cas)
    atomic_write_json(run.evaluate / "fidelity.json", fidelity)
    atomic_write_json(run.root / "tune" / "trials.json", trials)
    atomic_write_json(
        run.root / "tune" / "best.json",
        {
            "value": best["value"],
            "params": best["params"],
            "metric": "proxy val accuracy <small_cnn>",
            "n_trials": len(trials),
        },
    )
    atomic_write_text(run.root / "tune" / "best_recipe.yaml", "name: best <tuned>\n")
    prompts = [
        {
            "class_id": c.id,
            "class_name": c.name,
            "prompt": f"<em>photo {k}</em> of a {c.name}",
            "strategy": "template",
            "source": "template:photo",
        }
        for c in CLASSES
        for k in range(7)
    ]
    write_jsonl(run.prompts, prompts)
    for stage, info in (("classes", {}), ("data", {}), ("prompts", {"prompts": 14})):
        run.mark_done(stage, "f" * 16, **info)
    run.mark_done("evaluate", "e" * 16, seconds=12.5)
    rows = [
        {"time": 1.0 + e, "prefix": "real/seed0", "step": e, "metrics": {"val_accuracy": 0.5}}
        for e in range(3)
    ]
    (run.evaluate / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
    )
    return run, recipe, {"cas": cas, "fidelity": fidelity, "trials": trials, "best": best}
