"""Curation on the bundled digits (CPU, offline), over several recipe seeds.

The digits demo's generator is degraded on purpose (classifier-free guidance 3 instead of 1:
sharper but some wrong or broken digits), and each curation rule is applied to the same
synthetic set: synthetic-only and real + synthetic CAS before and after, the kept fraction,
and each scorer's time per 1,000 images. 'auto' percentiles are chosen by a proxy classifier's
accuracy on the real **val** split; the test split is read only by CAS (and the leak check).

    python benchmarks/curate_digits.py [--seeds 0 1 2] [--out runs/curate-digits]
        [--json benchmarks/results/curate_digits.json] [--quick]

One run folder per seed: the model is trained and the images generated once, each rule only
recomputes the view (the scores are cached) and CAS.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from common import mean_std

RESULTS = Path(__file__).resolve().parent / "results"

RULES: dict[str, dict[str, Any] | None] = {
    "none": None,
    "label_agreement auto": {"rules": [{"score": "label_agreement", "percentile": "auto"}]},
    "typicality auto": {"rules": [{"score": "typicality", "percentile": "auto"}]},
    "both auto": {
        "rules": [
            {"score": "label_agreement", "percentile": "auto"},
            {"score": "typicality", "percentile": "auto"},
        ]
    },
    "label_agreement >= 0.5": {"rules": [{"score": "label_agreement", "threshold": 0.5}]},
    # the percentile chosen for augmenting: proxies train on real train + the kept images
    "label_agreement auto, real+synthetic proxy": {
        "rules": [{"score": "label_agreement", "percentile": "auto"}],
        "proxy_train_set": "real+synthetic",
    },
}


def overrides(
    seed: int, out: Path, quick: bool, guidance: float, classifier_seeds: list[int]
) -> list[str]:
    sets = [
        f"output_dir={out}",
        f"seed={seed}",
        f"generate.generator.guidance_scale={guidance}",
        "generate.images_per_class=200",
        "evaluate.train_sets=[synthetic, real+synthetic]",
        f"evaluate.seeds={json.dumps(classifier_seeds)}",
        "report.enabled=false",
    ]
    if quick:
        sets += ["adapt.steps=100", "generate.images_per_class=30", "evaluate.epochs=3"]
    return sets


def run_seed(
    seed: int,
    root: Path,
    quick: bool,
    guidance: float,
    rules: list[str],
    classifier_seeds: list[int],
) -> dict[str, Any]:
    from synthset.cli import bundled_recipe
    from synthset.errors import SynthsetError
    from synthset.pipeline import run_all
    from synthset.recipe import load_recipe

    out = root / f"seed{seed}"
    rows: dict[str, Any] = {}
    for name in rules:
        curate = RULES[name]
        sets = overrides(seed, out, quick, guidance, classifier_seeds)
        if curate is not None:
            extra = {"epochs": 10, "proxy_epochs": 3} if quick else {}
            sets.append(f"curate={json.dumps(curate | extra)}")
        recipe = load_recipe(bundled_recipe("digits"), sets)
        start = time.perf_counter()
        try:
            run_all(recipe, progress=False)
        except SynthsetError as exc:  # e.g. a rule that keeps no image of a class
            rows[name] = {"error": str(exc)}
            print(f"seed {seed} {name}: {exc}", flush=True)
            continue
        cas = json.loads((out / "evaluate" / "cas.json").read_text())
        row: dict[str, Any] = {
            "test_accuracy": {
                k: round(v["summary"]["test_accuracy_mean"], 4)
                for k, v in cas["train_sets"].items()
            },
            "per_classifier_seed": {
                k: [round(r["test_accuracy"], 4) for r in v["runs"]]
                for k, v in cas["train_sets"].items()
            },
            "seconds": round(time.perf_counter() - start, 1),
        }
        if curate is not None:
            summary = json.loads((out / "curate" / "curate.json").read_text())
            row |= {
                "kept_fraction": summary["kept_fraction"],
                "leaks": summary["leaks"],
                "chosen": [a["rule"] for a in summary["auto"].values()],
                "seconds_per_1000_images": summary["seconds_per_1000_images"],
            }
        rows[name] = row
        print(f"seed {seed} {name}: {row}", flush=True)
    return rows


def summarize(per_seed: dict[str, dict[str, Any]], rules: list[str]) -> dict[str, Any]:
    """Mean ± std over seeds of each rule's CAS, its gain over no curation, the kept fraction."""
    out: dict[str, Any] = {}
    for name in rules:
        pairs = [(r[name], r["none"]) for r in per_seed.values() if "error" not in r[name]]
        if not pairs:
            out[name] = {"error": "failed on every seed"}
            continue
        runs, base = [p[0] for p in pairs], [p[1] for p in pairs]
        entry: dict[str, Any] = {}
        for s in runs[0]["test_accuracy"]:
            entry[s] = mean_std([r["test_accuracy"][s] for r in runs])
            gains = [
                r["test_accuracy"][s] - b["test_accuracy"][s]
                for r, b in zip(runs, base, strict=True)
            ]
            entry[f"{s} gain"] = mean_std(gains)
        if name != "none":
            entry["kept_fraction"] = mean_std([r["kept_fraction"] for r in runs])
            timing = runs[0]["seconds_per_1000_images"]
            entry["seconds_per_1000_images"] = {
                k: mean_std([r["seconds_per_1000_images"][k] for r in runs]) for k in timing
            }
        out[name] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/curate-digits"))
    parser.add_argument("--json", type=Path, default=RESULTS / "curate_digits.json")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument(
        "--rules", nargs="+", default=list(RULES), choices=list(RULES), help="'none' is needed."
    )
    parser.add_argument(
        "--classifier-seeds", type=int, nargs="+", default=[0], help="CAS seeds per recipe seed."
    )
    parser.add_argument("--quick", action="store_true", help="Tiny sizes: checks the plumbing.")
    args = parser.parse_args()
    rules = ["none", *[r for r in args.rules if r != "none"]]

    import torch

    per_seed = {
        str(s): run_seed(s, args.out, args.quick, args.guidance, rules, args.classifier_seeds)
        for s in args.seeds
    }
    summary = summarize(per_seed, rules)
    best = max(
        (n for n in rules if n != "none" and "error" not in summary[n]),
        key=lambda n: summary[n]["synthetic gain"]["mean"],
    )
    result = {
        "benchmark": "curate_digits",
        "command": "python benchmarks/curate_digits.py --seeds "
        + " ".join(map(str, args.seeds))
        + " --rules "
        + " ".join(f"'{r}'" for r in rules)
        + " --classifier-seeds "
        + " ".join(map(str, args.classifier_seeds)),
        "classifier_seeds": args.classifier_seeds,
        "seeds": args.seeds,
        "quick": args.quick,
        "generator": f"digits demo, guidance_scale {args.guidance}, 200 images per class",
        "best_rule": best,
        "targets": {
            "best rule: synthetic-only gain >= 0.02": summary[best]["synthetic gain"]["mean"]
            >= 0.02,
            "best rule: real+synthetic never lower (every seed)": all(
                rows[best]["test_accuracy"]["real+synthetic"]
                >= rows["none"]["test_accuracy"]["real+synthetic"]
                for rows in per_seed.values()
                if "error" not in rows[best]
            ),
        },
        "summary": summary,
        "per_seed": per_seed,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"best_rule": best, "targets": result["targets"]}, indent=2))


if __name__ == "__main__":
    main()
