"""Generator-ensemble selection on the bundled digits (CPU, offline), over several recipe seeds.

Three generators share the digits demo's trained model but sample it differently: "good" (30
DDIM steps, no guidance: the demo's), "sharp" (classifier-free guidance 3: bolder, some wrong
digits) and "rough" (4 DDIM steps: blurry). Each planned item goes to one of them (equal
weights). The baseline trains on the ensemble's first 100 images per class as generated; every
selection mode over-generates 2x (200 per class) and keeps 100 per class after dropping leaks:
``top_k`` by label agreement, ``equal`` shares per generator, ``temperature`` shares by each
generator's mean score, ``complexity`` (G-NoCL: mid-range typicality, little overlap). Reported:
synthetic-only and real + synthetic CAS, and how many kept images each generator contributes.
"good only" is the best single member at 100 per class, for reference.

    python benchmarks/ensemble_digits.py [--seeds 0 1 2] [--out runs/ensemble-digits]
        [--json benchmarks/results/ensemble_digits.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import machine, mean_std, write_result
from curate_digits import RESULTS

MEMBERS = [
    {"name": "good", "kind": "tiny", "steps": 30, "scheduler": "ddim", "guidance_scale": 1.0},
    {"name": "sharp", "kind": "tiny", "steps": 30, "scheduler": "ddim", "guidance_scale": 3.0},
    {"name": "rough", "kind": "tiny", "steps": 4, "scheduler": "ddim", "guidance_scale": 1.0},
]
MODES = ["none", "good only", "top_k", "equal", "temperature", "complexity"]


def overrides(mode: str, seed: int, out: Path, per_class: int, quick: bool) -> list[str]:
    sets = [
        f"output_dir={out}",
        f"seed={seed}",
        f"generate.images_per_class={per_class}",
        f"generate.generators={json.dumps([m | {'save_size': 8} for m in MEMBERS])}",
        "evaluate.train_sets=[synthetic, real+synthetic]",
        "evaluate.seeds=[0]",
        "report.enabled=false",
    ]
    if quick:
        sets += ["adapt.steps=100", "evaluate.epochs=3"]
    if mode == "good only":
        good = {k: v for k, v in MEMBERS[0].items() if k != "name"} | {"save_size": 8}
        sets[3] = f"generate.generator={json.dumps(good)}"
    elif mode != "none":
        curate = {"scorers": ["label_agreement", "typicality"], "selection": mode}
        if quick:
            curate |= {"epochs": 3}
        sets += ["generate.overgenerate=2", f"curate={json.dumps(curate)}"]
    return sets


def run_seed(seed: int, root: Path, per_class: int, quick: bool) -> dict[str, Any]:
    import yaml

    from synthset.cli import bundled_recipe
    from synthset.pipeline import run_all
    from synthset.recipe import load_recipe

    demo = yaml.safe_load(Path(bundled_recipe("digits")).read_text())
    del demo["generate"]["generator"]  # each mode gives its generator(s)
    base = root / "digits-without-generator.yaml"
    base.parent.mkdir(parents=True, exist_ok=True)
    base.write_text(yaml.safe_dump(demo))

    rows: dict[str, Any] = {}
    for mode in MODES:
        # one run folder per seed for the ensemble (the model and images are reused), one more
        # for the single generator
        out = root / f"seed{seed}" / ("single" if mode == "good only" else "ensemble")
        recipe = load_recipe(base, overrides(mode, seed, out, per_class, quick))
        start = time.perf_counter()
        run_all(recipe, progress=False)
        cas = json.loads((out / "evaluate" / "cas.json").read_text())
        row: dict[str, Any] = {
            "test_accuracy": {
                k: round(v["summary"]["test_accuracy_mean"], 4)
                for k, v in cas["train_sets"].items()
            },
            "seconds": round(time.perf_counter() - start, 1),
        }
        kept = _kept_rows(out, mode)
        row["kept_per_generator"] = dict(Counter(r.get("generator", "good") for r in kept))
        rows[mode] = row
        print(f"seed {seed} {mode}: {row}", flush=True)
    return rows


def _kept_rows(out: Path, mode: str) -> list[dict[str, Any]]:
    from synthset.store.atomic import read_jsonl

    made = read_jsonl(out / "images" / "metadata.jsonl")
    if mode in ("none", "good only"):
        return made
    kept = {r["item_id"] for r in read_jsonl(out / "curate" / "kept.jsonl") if r["kept"]}
    return [r for r in made if r["item_id"] in kept]


def summarize(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds of each mode's CAS and its gain over the plain ensemble."""
    out: dict[str, Any] = {}
    for mode in MODES:
        entry: dict[str, Any] = {}
        for s in per_seed[next(iter(per_seed))][mode]["test_accuracy"]:
            values = [rows[mode]["test_accuracy"][s] for rows in per_seed.values()]
            gains = [
                rows[mode]["test_accuracy"][s] - rows["none"]["test_accuracy"][s]
                for rows in per_seed.values()
            ]
            entry[s] = mean_std(values)
            entry[f"{s} gain"] = mean_std(gains)
        entry["kept_per_generator"] = [
            rows[mode]["kept_per_generator"] for rows in per_seed.values()
        ]
        out[mode] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("runs/ensemble-digits"))
    parser.add_argument("--json", type=Path, default=RESULTS / "ensemble_digits.json")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes: checks the plumbing.")
    args = parser.parse_args()

    per_seed = {str(s): run_seed(s, args.out, args.per_class, args.quick) for s in args.seeds}
    summary = summarize(per_seed)
    result = {
        "benchmark": "ensemble_digits",
        "command": "python benchmarks/ensemble_digits.py --seeds " + " ".join(map(str, args.seeds)),
        "members": MEMBERS,
        "per_class": args.per_class,
        "seeds": args.seeds,
        "quick": args.quick,
        "summary": summary,
        "per_seed": per_seed,
        "machine": machine(),
    }
    write_result(args.json, result)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
