"""Shared test helpers, imported by the test modules (no test module imports another; fixtures
live in conftest.py):

- small labelled image folders drawn from seeded generators: ``make_samples`` with one of two
  drawings, ``stripe_pattern`` (8×8 grayscale, classes ``NAMES``) or ``shape_pattern`` (12×12
  RGB, classes ``SHAPE_NAMES``), and ``real_splits`` for a train/val/test set of them;
- ``cas_spec``, the small CPU ``EvaluateSpec`` of the CAS tests;
- for the report tests: ``make_run`` (real splits, synthetic images, provenance, recipe),
  ``make_full_run`` (the same plus every file the report reads, in the shared formats of
  notes/eval_formats.md), ``embedded_images`` and the expected ``REPORT_HEADINGS`` and
  ``FULL_REPORT_IMAGES``.

Every image and number is drawn from a seeded generator, so the data of a test never changes.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from synthset.classes import ClassInfo
from synthset.data.splits import Samples, save_splits
from synthset.recipe import EvaluateSpec, Recipe, recipe_from_dict
from synthset.store.atomic import atomic_write_json, atomic_write_text, write_jsonl
from synthset.store.run_folder import RunFolder

# ----------------------------------------------------------------------------- image folders

#: The classes of ``stripe_pattern``, in label order.
NAMES = ["stripes", "columns", "checker"]
#: The classes of ``shape_pattern``, in label order.
SHAPE_NAMES = ["bars", "dots", "rings"]


def stripe_pattern(cls: int, rng: np.random.Generator, size: int = 8) -> Image.Image:
    """Three clearly different noisy grayscale patterns: rows, columns, checkerboard."""
    yy, xx = np.mgrid[:size, :size]
    base = [(yy % 2 == 0), (xx % 2 == 0), ((xx + yy) % 2 == 0)][cls] * 200.0
    arr = np.clip(base + rng.normal(0, 25, (size, size)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "L")


def shape_pattern(cls: int, rng: np.random.Generator, size: int = 12) -> Image.Image:
    """Three easily told apart classes of noisy RGB images: bars, dots, a ring."""
    yy, xx = np.mgrid[:size, :size]
    if cls == 0:
        base = (xx % 4 < 2) * 200.0
    elif cls == 1:
        base = ((xx % 4 == 1) & (yy % 4 == 1)) * 255.0
    else:
        r = np.hypot(xx - size / 2, yy - size / 2)
        base = (np.abs(r - size / 3) < 1.2) * 230.0
    img = np.clip(base[..., None] + rng.normal(0, 20, (size, size, 3)), 0, 255)
    return Image.fromarray(img.astype(np.uint8), "RGB")


def make_samples(
    root: Path,
    per_class: int,
    seed: int,
    *,
    size: int = 8,
    invert: bool = False,
    draw: Callable[[int, np.random.Generator, int], Image.Image] = stripe_pattern,
    names: list[str] = NAMES,
) -> Samples:
    """Write ``root/<class>/<k>.png`` (``per_class`` images of each of ``names``, drawn by
    ``draw`` with one generator seeded by ``seed``) and return their (path, label) list.
    ``invert`` inverts every image: a clearly shifted set with the same classes."""
    rng = np.random.default_rng(seed)
    samples: Samples = []
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            img = draw(c, rng, size)
            path = root / name / f"{k}.png"
            (ImageOps.invert(img) if invert else img).save(path)
            samples.append((path, c))
    return samples


def real_splits(root: Path, train: int, val: int, test: int) -> dict[str, Samples]:
    """``make_samples`` train, val and test splits under ``root`` (seeds 0, 1, 2), with the
    given number of images per class each."""
    return {
        "train": make_samples(root / "train", train, 0),
        "val": make_samples(root / "val", val, 1),
        "test": make_samples(root / "test", test, 2),
    }


# ----------------------------------------------------------------------------- CAS


def cas_spec(**kw: object) -> EvaluateSpec:
    """A small CPU evaluation: 6 epochs of batches of 16, unless ``kw`` says otherwise."""
    return EvaluateSpec(**({"epochs": 6, "batch_size": 16, "device": "cpu"} | kw))


# ----------------------------------------------------------------------------- report

#: The classes of the report run folders: names that must be escaped in HTML.
REPORT_CLASSES = [ClassInfo(0, "<b>x</b>", "b_x_b"), ClassInfo(1, "cat & dog", "cat dog")]
#: Every section of the full report: anchor -> heading.
REPORT_HEADINGS = {
    "run": "Run",
    "stages": "Stages",
    "cas": "CAS (classification accuracy score)",
    "scaling": "Scaling",
    "per-class": "Per-class accuracy",
    "confusion": "Confusion matrices",
    "curves": "Training curves",
    "fidelity": "Fidelity and diversity",
    "prompts": "Prompts",
    "tuning": "Tuning (Optuna)",
    "provenance": "Provenance",
}
#: The number of images embedded in the report of ``make_full_run``.
FULL_REPORT_IMAGES = 1 + 2 + 1 + 3 + 1 + 2 * len(REPORT_CLASSES) + 1


def embedded_images(html: str) -> list[Image.Image]:
    """The images embedded in a report as base64 PNG data URIs, in document order."""
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    return [Image.open(io.BytesIO(base64.b64decode(u))) for u in uris]


def _png(path: Path, cls: int, rng: np.random.Generator) -> Path:
    yy, xx = np.mgrid[:8, :8]
    base = ((yy if cls == 0 else xx) % 2 == 0) * 220.0
    arr = np.clip(base + rng.normal(0, 20, (8, 8)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "L").save(path)
    return path


def make_run(tmp_path: Path) -> tuple[RunFolder, Recipe]:
    """A run folder with real splits, synthetic images + metadata, provenance and recipe."""
    run = RunFolder(tmp_path / "run")
    rng = np.random.default_rng(0)
    splits: dict[str, Samples] = {}
    for split, n in (("train", 10), ("val", 4), ("test", 4)):
        splits[split] = [
            (_png(run.real / split / c.folder / f"{k}.png", c.id, rng), c.id)
            for c in REPORT_CLASSES
            for k in range(n)
        ]
    save_splits(run.real / "splits.json", splits)
    rows = []
    for c in REPORT_CLASSES:
        for k in range(6):
            name = f"{c.folder}/item{k}.png"
            _png(run.images / name, c.id, rng)
            rows.append(
                {
                    "file_name": name,
                    "label": c.id,
                    "class_name": c.name,
                    "prompt": f"<i>{c.name}</i> photo",
                    "seed": k,
                    "item_id": f"i{k}",
                }
            )
    write_jsonl(run.images / "metadata.jsonl", rows)
    atomic_write_json(run.provenance, {"versions": {"torch": "9.9-test"}, "host": "<h>"})
    recipe = recipe_from_dict(
        {
            "name": "report <test>",
            "output_dir": str(run.root),
            "classes": {"names": [c.name for c in REPORT_CLASSES]},
            "real": {"source": "imagefolder", "path": str(run.real)},
            "generate": {"generator": {"kind": "tiny", "model": "some/model"}},
            "evaluate": {"epochs": 2},
            "report": {"samples_per_class": 3},
        }
    )
    run.recipe.write_text("name: report <test>\n", encoding="utf-8")
    return run, recipe


# The full run folder (make_full_run): cas.json with a scaling and a real-subset study,
# fidelity.json, tune/, prompts.jsonl, stage markers and metrics.jsonl, on top of make_run's real
# and synthetic images. The tests recompute what the report must show from these files, not
# from constants.

_N_TEST_PER_CLASS = 4
_N_REAL_TRAIN = 20
_SEEDS = [0, 1, 2]
# label -> (kind, real_subset, synthetic_multiplier, real_batch_fraction)
_STUDY: dict[str, tuple[str, float | None, float | None, float | None]] = {
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
    k = len(REPORT_CLASSES)
    matrix = []
    for i in range(k):
        correct = int(rng.integers(1, _N_TEST_PER_CLASS + 1))
        row = [0] * k
        row[i] = correct
        row[(i + 1) % k] += _N_TEST_PER_CLASS - correct
        matrix.append(row)
    per_class = [matrix[i][i] / _N_TEST_PER_CLASS for i in range(k)]
    epochs = 3
    val = [float(v) for v in np.sort(rng.uniform(0.3, 1.0, epochs))]
    return {
        "seed": seed,
        "test_accuracy": sum(matrix[i][i] for i in range(k)) / (k * _N_TEST_PER_CLASS),
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
    n_real = 0 if kind == "synthetic" else int(_N_REAL_TRAIN * (subset or 1.0))
    n_syn = 0 if kind == "real" else int(_N_REAL_TRAIN * mult) if mult else 12
    runs = [_run(rng, s, n_real + n_syn) for s in _SEEDS]
    accs = [r["test_accuracy"] for r in runs]
    k = len(REPORT_CLASSES)
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
            "seeds": _SEEDS,
            "device": "cpu",
            "class_names": [c.name for c in REPORT_CLASSES],
            "n_val": 8,
            "n_test": _N_TEST_PER_CLASS * len(REPORT_CLASSES),
            "optimizer": "adamw",
        },
        "train_sets": {label: _entry(rng, label, spec) for label, spec in sorted(_STUDY.items())},
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
        "label_fidelity": float(rng.uniform()),
    }


def fidelity_json(seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    per_class = {c.name: _metrics(rng) for c in REPORT_CLASSES}
    per_class[REPORT_CLASSES[1].name]["fid"] = None  # a class too small for FID
    return {
        "extractor": "classifier:small_cnn-real",
        "feature_dim": 64,
        "n_real": _N_REAL_TRAIN,
        "n_synthetic": 12,
        "overall": _metrics(rng),
        "per_class": per_class,
        "clip_score": {
            "model": "tiny-clip",
            "mean": float(rng.uniform(20, 30)),
            "per_class": {c.name: float(rng.uniform(20, 30)) for c in REPORT_CLASSES},
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
        for c in REPORT_CLASSES
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


# ----------------------------------------------------------------------------- toy digits runs

#: The digits demo at toy size: a barely trained model, so its digits are poor.
TOY_DIGITS = [
    "adapt.channels=[8, 16]",
    "adapt.steps=30",
    "adapt.batch_size=32",
    "generate.images_per_class=12",
    "generate.batch_size=60",
    "generate.generator.steps=4",
    "evaluate.epochs=2",
    "evaluate.seeds=[0]",
    "evaluate.train_sets=[synthetic]",
    "report.enabled=false",
]
#: A reference classifier and proxies that train in seconds.
FAST_CURATE = {"epochs": 3, "proxy_epochs": 2}


def toy_digits(out: Path, curate: dict[str, Any] | None = None, *more: str) -> Recipe:
    """The toy digits recipe writing to ``out``, with a curate section when given."""
    from synthset.cli import bundled_recipe
    from synthset.recipe import load_recipe

    sets = [f"curate={json.dumps(FAST_CURATE | curate)}"] if curate is not None else []
    return load_recipe(bundled_recipe("digits"), [f"output_dir={out}", *TOY_DIGITS, *sets, *more])


def copy_run(generated: Path, tmp_path: Path) -> Path:
    """A copy of a finished run folder (its stages stay current: paths inside are relative)."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(generated, out)
    return out


def cli(*args: str) -> list[str]:
    """The command line of ``synthset ARGS`` in this interpreter."""
    import sys

    return [sys.executable, "-m", "synthset.cli", *args]


def image_bytes(run: Path) -> dict[str, bytes]:
    """Every PNG under the run's ``images/``, by relative path."""
    images = run / "images"
    return {str(p.relative_to(images)): p.read_bytes() for p in sorted(images.rglob("*.png"))}


def manifest_ids(run: Path) -> list[str]:
    """Item ids over every manifest file of the run (plain, shard and queue-worker files)."""
    from synthset.store.atomic import read_jsonl

    return [e["item_id"] for f in sorted(run.glob("manifest*.jsonl")) for e in read_jsonl(f)]


def trained_toy(root: Path, toy: dict[str, Any], run_ok: Callable[..., str]) -> tuple[Path, Path]:
    """The recipe ``toy`` written in ``root`` and a run folder ``root/base`` with its model
    adapted and its plan written (``run_ok`` runs one CLI command and checks it succeeded)."""
    import yaml

    recipe = root / "toy.yaml"
    recipe.write_text(yaml.safe_dump(toy))
    base = root / "base"
    run_ok("adapt", str(recipe), "--out", str(base), "-q")
    run_ok("plan", str(recipe), "--out", str(base))
    return recipe, base


def reference_images(
    recipe: Path, base: Path, run_ok: Callable[..., str], planned: int
) -> dict[str, bytes]:
    """The images one uninterrupted ``synthset generate`` makes from a copy of ``base``."""
    import shutil

    ref = base.parent / "reference"
    shutil.copytree(base, ref)
    run_ok("generate", str(recipe), "--out", str(ref), "-q")
    images = image_bytes(ref)
    assert len(images) == planned
    return images


def descendants(root: int, marker: str) -> list[Any]:
    """The live processes below ``root`` whose command line contains ``marker``."""
    import psutil

    try:
        children = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if marker in " ".join(child.cmdline()):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
