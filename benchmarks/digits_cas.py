"""The demo's CAS numbers over several recipe seeds (mean ± std), checked against the targets:
synthetic-only accuracy >= 0.95 x real-only accuracy, and real + synthetic >= real-only.

Each seed is a whole ``synthset demo`` run (own split, own model, own images, own classifiers).

    python benchmarks/digits_cas.py [--seeds 0 1 2] [--out runs/digits-cas] [--set key=value]
                                    [--json benchmarks/results/digits_cas.json]

Writes ``benchmarks/results/digits_cas.json`` (or ``--json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from common import mean_std

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/digits-cas"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", type=Path, default=RESULTS / "digits_cas.json")
    args = parser.parse_args()

    import torch

    from synthset.cli import bundled_recipe
    from synthset.pipeline import run_all
    from synthset.recipe import load_recipe

    per_seed: dict[int, dict[str, float]] = {}
    val_per_seed: dict[int, dict[str, float]] = {}
    seconds: dict[int, float] = {}
    for seed in args.seeds:
        recipe = load_recipe(
            bundled_recipe("digits"),
            [f"seed={seed}", f"output_dir={args.out / f'seed{seed}'}", *args.overrides],
        )
        start = time.perf_counter()
        run = run_all(recipe, progress=False)
        seconds[seed] = round(time.perf_counter() - start, 1)
        cas = json.loads((run.evaluate / "cas.json").read_text())
        per_seed[seed] = {
            name: res["summary"]["test_accuracy_mean"] for name, res in cas["train_sets"].items()
        }
        val_per_seed[seed] = {
            name: res["summary"]["best_val_accuracy_mean"]
            for name, res in cas["train_sets"].items()
        }
        print(f"seed {seed}: {per_seed[seed]} ({seconds[seed]} s)", flush=True)

    sets = list(next(iter(per_seed.values())))
    summary = {s: mean_std([per_seed[k][s] for k in per_seed]) for s in sets}
    real, syn = summary["real"]["mean"], summary["synthetic"]["mean"]
    both = summary["real+synthetic"]["mean"]
    result = {
        "benchmark": "digits_cas",
        "seeds": args.seeds,
        "test_accuracy": summary,
        "per_seed": {str(k): v for k, v in per_seed.items()},
        "best_val_accuracy": {s: mean_std([val_per_seed[k][s] for k in per_seed]) for s in sets},
        "real+synthetic minus real, per seed": {
            str(k): round(v["real+synthetic"] - v["real"], 4) for k, v in per_seed.items()
        },
        "overrides": args.overrides,
        "seconds_per_run": {str(k): v for k, v in seconds.items()},
        "synthetic_over_real": round(syn / real, 4),
        "targets": {
            "synthetic >= 0.95 x real": syn >= 0.95 * real,
            "real+synthetic >= real": both >= real,
        },
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
    }
    path = args.json
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
