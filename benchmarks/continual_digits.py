"""Continual learning on the bundled digits (CPU, offline): real vs synthetic streams.

The digits demo's diffusion model (trained on the real train split) makes as many synthetic
digits per class as the real train split has on average; an online learner then meets the ten
classes as five tasks of two, each image once, with experience replay from a 100-image buffer
(er), dark experience replay from the same buffer (der++: stored logits too) or without one
(finetune, the lower bound). A_auc (accuracy over time on the real test
images of the classes seen so far) and A_last (all classes, at the end), over learner seeds.

    python benchmarks/continual_digits.py [--seeds 0 1 2] [--out runs/continual-digits]
        [--json benchmarks/results/continual_digits.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import machine, write_result

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=108, help="synthetic images per class")
    parser.add_argument("--out", type=Path, default=Path("runs/continual-digits"))
    parser.add_argument("--json", type=Path, default=RESULTS / "continual_digits.json")
    args = parser.parse_args()

    from synthset.cli import bundled_recipe
    from synthset.pipeline import open_run, stage_continual
    from synthset.recipe import load_recipe

    continual = {
        "train_sets": ["real", "synthetic"],
        "methods": ["er", "der++", "finetune"],
        "classes_per_task": 2,
        "buffer_size": 100,
        "seeds": args.seeds,
    }
    sets = [
        f"output_dir={args.out}",
        f"generate.images_per_class={args.per_class}",
        "evaluate.train_sets=[real]",
        f"evaluate.continual={json.dumps(continual)}",
        "report.enabled=false",
    ]
    recipe = load_recipe(bundled_recipe("digits"), sets)
    start = time.perf_counter()
    result = stage_continual(recipe, open_run(recipe), progress=False)
    assert result is not None
    summary = {
        f"{stream} {method}": {
            k: {m: round(v, 4) for m, v in stats.items()} for k, stats in entry["summary"].items()
        }
        for stream, methods in result["streams"].items()
        for method, entry in methods.items()
    }
    out = {
        "benchmark": "continual_digits",
        "command": "python benchmarks/continual_digits.py --seeds "
        + " ".join(map(str, args.seeds)),
        "synthetic_per_class": args.per_class,
        "tasks": result["config"]["tasks"],
        "settings": {
            k: result["config"][k]
            for k in ("buffer_size", "batch_size", "online_iterations", "lr", "eval_every")
        },
        "summary": summary,
        "seconds": round(time.perf_counter() - start, 1),
        "streams": result["streams"],
        "machine": machine(),
    }
    write_result(args.json, out)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
