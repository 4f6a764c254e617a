"""Is generating better than retrieving? The bundled digits (CPU, offline).

The pool is the real train split **without its labels** (files renamed, flat), mixed with noise
images (uniform noise and blank squares) and with exact copies of a few real **test** images,
planted to show the leak check. No CLIP can be downloaded here, so retrieval ranks by
``prototypes``: the penultimate features of a classifier trained on the real train split (the
stand-in for a large pretrained encoder such as CLIP, which has seen images like these),
compared with the mean feature of 5 labelled real train images per class (the stand-in for the
class prompts). Each class keeps as many images as the synthetic set has of it (equal counts).
Then CAS: real, synthetic, retrieved and retrieved+synthetic on the same real test split, for
each recipe seed (it seeds generation, the classifier and the split); plus how many retrieved
images carry the right class (the pool's hidden labels) and how many planted test copies
retrieval skipped.

    python benchmarks/retrieval_digits.py [--seeds 0 1 2] [--per-class 50] [--shots 5]
        [--out runs/retrieval-digits] [--json benchmarks/results/retrieval_digits.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from common import machine, write_result
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"


def build_pool(real: dict, folder: Path, noise: int, planted: int) -> dict[str, int]:
    """The unlabeled pool; returns each pool file's hidden label (-1: noise, -2: test copy)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    truth: dict[str, int] = {}
    for i, (path, label) in enumerate(real["train"]):
        name = f"img{i:05d}.png"
        shutil.copyfile(path, folder / name)
        truth[name] = int(label)
    size = Image.open(real["train"][0][0]).size
    for i in range(noise):
        if i % 2:
            arr = rng.integers(0, 256, size[::-1], dtype=np.uint8)
        else:
            arr = np.full(size[::-1], int(rng.integers(0, 256)), dtype=np.uint8)
        Image.fromarray(arr, "L").save(folder / f"noise{i:05d}.png")
        truth[f"noise{i:05d}.png"] = -1
    for i, (path, _) in enumerate(real["test"][:planted]):
        shutil.copyfile(path, folder / f"copy{i:05d}.png")
        truth[f"copy{i:05d}.png"] = -2
    return truth


def one_seed(args: argparse.Namespace, seed: int) -> dict:
    """Generate, retrieve and train for one recipe seed (generation, shots and classifier)."""
    from synthset.cli import bundled_recipe
    from synthset.data.splits import load_splits
    from synthset.pipeline import open_run, run_stage, stage_evaluate
    from synthset.recipe import load_recipe

    out = args.out / f"seed{seed}"
    pool = args.out / f"pool{seed}"
    retrieve = {"pool": str(pool.resolve()), "by": "prototypes", "shots": args.shots}
    sets = [
        f"output_dir={out}",
        f"seed={seed}",
        f"generate.images_per_class={args.per_class}",
        "evaluate.train_sets=[real,synthetic,retrieved,retrieved+synthetic]",
        f"evaluate.seeds=[{seed}]",
        "evaluate.fidelity.enabled=false",
        f"retrieve={json.dumps(retrieve)}",
        "report.enabled=false",
    ]
    recipe = load_recipe(bundled_recipe("digits"), sets)
    run = open_run(recipe)
    run_stage("data", recipe, run, progress=False)
    truth = build_pool(load_splits(run.real / "splits.json"), pool, args.noise, args.planted)
    result = stage_evaluate(recipe, run, progress=False)
    assert result is not None
    rows = [json.loads(line) for line in (run.retrieve / "retrieved.jsonl").open()]
    summary = json.loads((run.retrieve / "summary.json").read_text())
    return {
        "seed": seed,
        "retrieved": len(rows),
        "label_precision": sum(truth[r["pool_key"]] == r["label"] for r in rows) / len(rows),
        "noise_retrieved": sum(truth[r["pool_key"]] == -1 for r in rows),
        "test_copies_retrieved": sum(truth[r["pool_key"]] == -2 for r in rows),
        "leaks_skipped": summary["leaks_skipped"],
        "pool_images": summary["pool_images"],
        "test_accuracy": {
            name: entry["summary"]["test_accuracy_mean"]
            for name, entry in result["train_sets"].items()
        },
        "n_train": {
            name: entry["summary"]["n_train"] for name, entry in result["train_sets"].items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="recipe seeds")
    parser.add_argument("--per-class", type=int, default=50, help="synthetic images per class")
    parser.add_argument("--shots", type=int, default=5, help="labelled images per prototype")
    parser.add_argument("--noise", type=int, default=400, help="noise images in the pool")
    parser.add_argument("--planted", type=int, default=30, help="test copies in the pool")
    parser.add_argument("--out", type=Path, default=Path("runs/retrieval-digits"))
    parser.add_argument("--json", type=Path, default=RESULTS / "retrieval_digits.json")
    args = parser.parse_args()

    start = time.perf_counter()
    runs = [one_seed(args, seed) for seed in args.seeds]
    names = list(runs[0]["test_accuracy"])
    summary = {
        name: {
            "test_accuracy_mean": round(
                float(np.mean([r["test_accuracy"][name] for r in runs])), 4
            ),
            "test_accuracy_std": round(
                float(np.std([r["test_accuracy"][name] for r in runs], ddof=1))
                if len(runs) > 1
                else 0.0,
                4,
            ),
            "n_train": runs[0]["n_train"][name],
        }
        for name in names
    }
    out = {
        "benchmark": "retrieval_digits",
        "command": "python benchmarks/retrieval_digits.py --seeds "
        + " ".join(map(str, args.seeds)),
        "pool": {
            "real_train_unlabeled": runs[0]["pool_images"] - args.noise - args.planted,
            "noise": args.noise,
            "planted_test_copies": args.planted,
        },
        "retrieval": {
            "by": f"prototypes (real-trained classifier features, {args.shots} shots per class)",
            "per_class": args.per_class,
            "label_precision_mean": round(float(np.mean([r["label_precision"] for r in runs])), 4),
            "noise_retrieved": sum(r["noise_retrieved"] for r in runs),
            "test_copies_retrieved": sum(r["test_copies_retrieved"] for r in runs),
            "leaks_skipped": [r["leaks_skipped"] for r in runs],
        },
        "summary": summary,
        "runs": runs,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": machine(),
    }
    write_result(args.json, out)
    print(json.dumps({k: out[k] for k in ("retrieval", "summary")}, indent=2))


if __name__ == "__main__":
    main()
