"""Does synthetic data help a pretrained backbone? The bundled digits (CPU, offline).

No pretrained weights can be downloaded here, so the backbone is pretrained here: the small CNN
trained on the real train digits **0–4** (selected on their val images). The study then learns
the new classes **5–9** from real, synthetic (the digits demo's model, ``--per-class`` images per
class) or both (half-real batches), with each ``evaluate.protocol``: scratch (no pretraining),
linear_probe (frozen features, logistic regression with C chosen on val) and finetune (new head,
backbone at 0.1× lr, WiSE-FT alphas chosen on val). Every number is test accuracy on the real
test digits 5–9, for each recipe seed (generation, split, pretraining and classifier seed).

    python benchmarks/pretrained_digits.py [--seeds 0 1 2] [--per-class 100]
        [--out runs/pretrained-digits] [--json benchmarks/results/pretrained_digits.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import machine, write_result

RESULTS = Path(__file__).resolve().parent / "results"
OLD, NEW = range(5), range(5, 10)
SETS = ["real", "synthetic", "real+synthetic"]


def pretrain(real: dict, seed: int, out: Path) -> Path:
    """The small CNN trained on the real train digits 0-4, best epoch on their val images."""
    import torch
    from safetensors.torch import save_file

    from synthset.evaluate.classifiers import build_classifier
    from synthset.evaluate.tensors import load_tensors
    from synthset.evaluate.train import train_classifier
    from synthset.recipe import EvaluateSpec

    def old(split: str) -> list:
        return [(p, c) for p, c in real[split] if c in OLD]

    train, val = load_tensors(old("train"), 8, 1, "old train"), load_tensors(old("val"), 8, 1, "v")
    torch.manual_seed(seed)
    model = build_classifier("small_cnn", len(OLD), 1, 8)
    spec = EvaluateSpec(epochs=30, ema_epochs=3)
    best = train_classifier(model, train, val, spec, seed, torch.device("cpu"), False)
    model.load_state_dict(best.state)
    path = out / "backbone-digits0-4.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def one_seed(args: argparse.Namespace, seed: int) -> dict:
    from synthset.cli import bundled_recipe
    from synthset.data.splits import load_splits
    from synthset.evaluate.cas import run_cas
    from synthset.pipeline import open_run, run_stage
    from synthset.recipe import EvaluateSpec, load_recipe
    from synthset.store.imagefolder import read_samples

    out = args.out / f"seed{seed}"
    sets = [f"output_dir={out}", f"seed={seed}", f"generate.images_per_class={args.per_class}"]
    recipe = load_recipe(bundled_recipe("digits"), [*sets, "report.enabled=false"])
    run = open_run(recipe)
    run_stage("generate", recipe, run, progress=False)
    real = load_splits(run.real / "splits.json")
    backbone = pretrain(real, seed, out)

    def new(samples: list) -> list:
        return [(p, c - 5) for p, c in samples if c in NEW]

    real_new = {split: new(samples) for split, samples in real.items()}
    synthetic = new(read_samples(run.images))
    names = [str(c) for c in NEW]
    protocols = {
        "scratch": {},
        "linear_probe": {"protocol": "linear_probe", "classifier_weights": backbone},
        "finetune": {
            "protocol": "finetune",
            "classifier_weights": backbone,
            "backbone_lr_scale": 0.1,
            "wise_ft_alphas": [0.25, 0.5, 0.75],
        },
    }
    result: dict = {"seed": seed, "n_real_train": len(real_new["train"]), "accuracy": {}}
    for name, settings in protocols.items():
        spec = EvaluateSpec(
            train_sets=SETS,
            epochs=30,
            ema_epochs=3,
            real_batch_fraction=0.5,
            seeds=[seed],
            **settings,
        )
        cas = run_cas(spec, real_new, synthetic, names, out / name, progress=False)
        result["accuracy"][name] = {
            s: cas["train_sets"][s]["runs"][0]["test_accuracy"] for s in SETS
        }
        if name == "finetune":
            result["wise_ft_alpha"] = {
                s: cas["train_sets"][s]["runs"][0].get("wise_ft_alpha") for s in SETS
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="recipe seeds")
    parser.add_argument("--per-class", type=int, default=100, help="synthetic images per class")
    parser.add_argument("--out", type=Path, default=Path("runs/pretrained-digits"))
    parser.add_argument("--json", type=Path, default=RESULTS / "pretrained_digits.json")
    args = parser.parse_args()

    start = time.perf_counter()
    runs = [one_seed(args, seed) for seed in args.seeds]
    summary = {
        protocol: {
            s: {
                "mean": round(float(np.mean([r["accuracy"][protocol][s] for r in runs])), 4),
                "std": round(float(np.std([r["accuracy"][protocol][s] for r in runs], ddof=1)), 4)
                if len(runs) > 1
                else 0.0,
            }
            for s in SETS
        }
        for protocol in runs[0]["accuracy"]
    }
    out = {
        "benchmark": "pretrained_digits",
        "command": "python benchmarks/pretrained_digits.py --seeds "
        + " ".join(map(str, args.seeds)),
        "backbone": "small_cnn pretrained on real train digits 0-4 (30 epochs, EMA, best on val)",
        "new_classes": list(NEW),
        "synthetic_per_class": args.per_class,
        "summary": summary,
        "runs": runs,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": machine(),
    }
    write_result(args.json, out)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
