"""Adaptation methods on two digits benchmarks (CPU, offline), over several recipe seeds.

A pretrained base is built here for each seed from that seed's real train split with
``synthset pretrain-tiny``'s code (a tiny text-conditional Stable Diffusion pipeline), then each
``adapt.method`` adapts it and generates a synthetic set that CAS scores on the real test split:

- **A. The domain is known, the labels are not.** The base is pretrained on all ten digits with
  generic captions (label-free shape words measured on the pixels: ink, width, loops, balance,
  lean; never a class word). Every method must teach it the
  classes from the labeled real train images. Floor: the base prompted with "a handwritten
  digit 7" (no adaptation). Ceiling: the tiny class-conditional model trained from scratch.
  Low data: the generator adapted on the real 10 % only (``adapt.real_subset``), against real
  10 % and real 25 % alone.
- **B. New classes.** The base is pretrained on digits 0–4 with class captions; each method
  adapts it to 5–9, never seen in pretraining; CAS on 5–9.

    python benchmarks/adapt_digits.py [--settings A B] [--seeds 0 1 2] [--methods ...]
        [--out runs/adapt-digits] [--json benchmarks/results/adapt_digits.json] [--quick]

Each (setting, seed, method) is a run folder; a rerun skips what is done (the stage table).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from common import mean_std

RESULTS = Path(__file__).resolve().parent / "results"
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATE = "a handwritten digit {class}"
#: fidelity metrics kept per run: does a real-trained classifier see the class (label
#: fidelity), and how much of the real variety do the images cover
FIDELITY = ("label_fidelity", "coverage", "diversity_synthetic")


def method_recipe(method: str, base: Path, quick: bool, real_subset: float | None) -> dict:
    """The adapt section and generator of one method (``floor``: no adapt section)."""
    steps = 150 if quick else 1000
    gen: dict[str, Any] = {
        "kind": "text2image",
        "model": str(base),
        "steps": 20,
        "scheduler": "ddim",
        "guidance_scale": 2.0,
        "height": 8,
        "width": 8,
    }
    adapt: dict[str, Any] | None
    if method == "floor":
        adapt = None
    elif method == "ceiling":
        adapt = {"method": "tiny_diffusion", "steps": 100 if quick else 1000}
        gen = {"kind": "tiny", "steps": 30, "scheduler": "ddim", "guidance_scale": 1.0}
    elif method in ("lora", "lora_text_encoder"):
        adapt = {"method": "lora", "rank": 8, "lr": 2e-3, "batch_size": 64, "steps": steps}
        if method == "lora_text_encoder":  # + LoRA on the text encoder's attention
            adapt["lora_text_encoder"] = True
    elif method == "textual_inversion":
        adapt = {
            "method": "textual_inversion",
            "num_tokens": 2,
            "init_word": "digit",
            "lr": 2e-2,
            "batch_size": 64,
            "steps": steps,
        }
    elif method == "diffusion_inversion":
        adapt = {
            "method": "diffusion_inversion",
            "num_tokens": 5,
            "group_size": 2000,
            "lr": 3e-2,
            "batch_size": 64,
            "steps": steps * 2,
        }
        gen = gen | {"kind": "inversion", "emb_noise": 0.1, "interpolation_strength": 0.0}
    elif method == "class_encoder":
        adapt = {
            "method": "class_encoder",
            "num_tokens": 4,
            "lr": 1e-3,
            "batch_size": 64,
            "steps": steps,
            "finetune": "lora",
            "finetune_steps": steps,
            "finetune_lr": 2e-3,
            "rank": 8,
        }
    else:
        raise SystemExit(f"unknown method {method!r}")
    if adapt is not None:
        adapt |= {"warmup_steps": 50, "checkpoint_every": 250, "validate_every": 250}
        if real_subset is not None:
            adapt["real_subset"] = real_subset
    return {"adapt": adapt, "generator": gen}


def recipe_dict(
    seed: int,
    out: Path,
    real: dict,
    classes: dict,
    parts: dict,
    quick: bool,
    low_data: bool,
    per_class: int = 200,
    mixed_epoch: str = "real",
) -> dict:
    evaluate: dict[str, Any] = {
        "train_sets": ["real", "synthetic", "real+synthetic"],
        "real_batch_fraction": 0.5,
        "classifier": "small_cnn",
        "epochs": 10 if quick else 30,
        "ema_epochs": 3,
        "seeds": [0],
    }
    if low_data:
        evaluate["real_subsets"] = [0.1, 0.25]
        evaluate["mixed_epoch"] = mixed_epoch
    data: dict[str, Any] = {
        "name": out.name,
        "seed": seed,
        "output_dir": str(out),
        "classes": classes,
        "real": real,
        "prompts": {"template": TEMPLATE, "per_class": 1},
        "generate": {
            "images_per_class": 40 if quick else per_class,
            "batch_size": 250,
            "generator": parts["generator"],
        },
        "evaluate": evaluate,
    }
    if parts["adapt"] is not None:
        data["adapt"] = parts["adapt"]
    return data


def run_one(data: dict) -> dict[str, Any]:
    """Run a recipe stage by stage; CAS per train set and the stages' seconds."""
    import yaml

    from synthset.pipeline import (
        stage_adapt,
        stage_data,
        stage_evaluate,
        stage_fidelity,
        stage_generate,
        stage_plan,
        stage_prompts,
    )
    from synthset.recipe import load_recipe
    from synthset.store.run_folder import RunFolder

    out = Path(data["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    recipe = load_recipe(path)
    run = RunFolder(out)
    stage_data(recipe, run)
    stage_prompts(recipe, run)
    if recipe.adapt is not None:
        stage_adapt(recipe, run, progress=False)
    stage_plan(recipe, run)
    stage_generate(recipe, run, progress=False)
    stage_evaluate(recipe, run, progress=False)
    fidelity = stage_fidelity(recipe, run, progress=False) or {}
    seconds = stage_seconds(out)  # as each stage took when it ran (a rerun skips it)
    timing: dict[str, float | None] = {}
    if recipe.adapt is not None:
        timing["adapt_s"] = seconds.get("adapt")
    gen_s = seconds.get("generate")
    n_images = len(list((run.images).rglob("*.png")))
    timing["generate_s"] = gen_s
    timing["images_per_s"] = round(n_images / gen_s, 1) if gen_s else None
    timing["total_s"] = round(sum(seconds.values()), 1)
    cas = json.loads((run.evaluate / "cas.json").read_text())
    acc = {k: v["summary"]["test_accuracy_mean"] for k, v in cas["train_sets"].items()}
    overall = fidelity.get("overall") or {}
    kept = {k: overall[k] for k in FIDELITY if k in overall}
    recalls = [m["recall"] for m in (fidelity.get("per_class") or {}).values()]
    if recalls and None not in recalls:  # how much of each class's real variety is drawn
        kept["class_recall"] = round(sum(recalls) / len(recalls), 4)
    return {"test_accuracy": acc, **kept, **timing}


def stage_seconds(run_dir: Path) -> dict[str, float]:
    """Seconds each finished stage of a run folder took, from its stage markers."""
    out = {}
    for marker in sorted((run_dir / "stages").glob("*.json")):
        took = json.loads(marker.read_text()).get("seconds")
        if isinstance(took, (int, float)):
            out[marker.stem] = round(float(took), 1)
    return out


def digits_split(seed: int, root: Path) -> Path:
    """The seed's split of the ten digits (the data stage of a digits recipe)."""
    import yaml

    from synthset.pipeline import stage_data
    from synthset.recipe import load_recipe
    from synthset.store.run_folder import RunFolder

    root.mkdir(parents=True, exist_ok=True)
    data = {
        "name": "split",
        "seed": seed,
        "output_dir": str(root),
        "classes": {"dataset": "digits"},
        "real": {"source": "digits", "val_fraction": 0.15, "test_fraction": 0.25},
    }
    path = root.parent / f"{root.name}.yaml"
    path.write_text(yaml.safe_dump(data))
    stage_data(load_recipe(path), RunFolder(root))
    return root / "real" / "splits.json"


MAP_LEVELS = (0.2, 0.45)  # a 2x2-pixel cell's mean ink: below, between, above → 0, 1, 2


def detailed_captions(train: list[tuple[Path, int]]) -> list[str]:
    """Setting A's label-free captions with a richer vocabulary: the generic words (ink, width,
    loop, lean) and where the ink lies, as a 4x4 map of ink levels read row by row ("a bold
    narrow digit, loop top, leans left, map 0120 1201 0210 0110"); short enough for the tiny
    text encoder's 77 tokens."""
    import numpy as np
    from caption_information import attributes
    from PIL import Image

    from synthset.adapt.tiny_base import generic_captions

    out = []
    for (path, _), caption in zip(train, generic_captions(train), strict=True):
        ink, width, _, lean, loop = attributes(caption)
        pixels = np.asarray(Image.open(path).convert("L").resize((8, 8)), np.float32) / 255
        cells = pixels.reshape(4, 2, 4, 2).mean((1, 3))
        rows = " ".join("".join(str(v) for v in row) for row in np.digitize(cells, MAP_LEVELS))
        out.append(f"a {ink} {width} digit, {loop}, {lean}, map {rows}")
    return out


def words_folder(splits_file: Path, out: Path, labels: range) -> Path:
    """The seed's split of the digits ``labels`` as an ImageFolder (train/ val/ test/) whose
    class folders are the digits' names as words: class names a text encoder can tell apart,
    as a real model's vocabulary would (the tiny tokenizer spells numerals as one rare byte)."""
    from synthset.data.splits import load_splits

    if (out / "test").is_dir():
        return out
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for split, samples in load_splits(splits_file).items():
        for path, label in samples:
            if label in labels:
                dest = tmp / split / WORDS[label] / path.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
    tmp.rename(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["A", "B"], choices=["A", "B"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[
            "floor",
            "lora",
            "textual_inversion",
            "diffusion_inversion",
            "class_encoder",
            "ceiling",
        ],
    )
    parser.add_argument("--out", type=Path, default=Path("runs/adapt-digits"))
    parser.add_argument("--json", type=Path, default=RESULTS / "adapt_digits.json")
    parser.add_argument("--quick", action="store_true", help="Tiny steps: checks the plumbing.")
    parser.add_argument("--base-steps", type=int, default=1500)
    parser.add_argument("--base-batch", type=int, default=64)
    parser.add_argument(
        "--low-data-images",
        type=int,
        default=200,
        help="Synthetic images per class of the low-data (real 10 %%) runs.",
    )
    parser.add_argument(
        "--only-low-data", action="store_true", help="Setting A's low-data runs only."
    )
    parser.add_argument(
        "--skip-low-data", action="store_true", help="Setting A without its low-data runs."
    )
    parser.add_argument(
        "--low-data-epoch",
        choices=["real", "union"],
        default="real",
        help="evaluate.mixed_epoch of the low-data runs (union: an epoch is a pass over the "
        "real subset and the synthetic images together)",
    )
    parser.add_argument(
        "--adapt-set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="Change the adapt section of every method run (YAML values, e.g. steps=2000); "
        "the rows are labelled with the change, so they sit beside the defaults' rows.",
    )
    parser.add_argument(
        "--generate-set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="Change the generator of every method run (e.g. interpolation_strength=0.5).",
    )
    parser.add_argument(
        "--evaluate-set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="Change the evaluate section of every method run (e.g. real_batch_fraction=0.25).",
    )
    parser.add_argument(
        "--curate-set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="Curate every method run's images with this curate section (e.g. "
        "'rules=[{score: label_agreement, percentile: auto}]'); evaluate trains on the view.",
    )
    parser.add_argument(
        "--base-captions",
        choices=["generic", "detailed"],
        default="generic",
        help="Setting A's base captions: generic shape words, or those plus a 4x4 ink map "
        "(a richer label-free vocabulary; results under 'A (detailed captions)').",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="Combine result files of separate runs (e.g. per seed or setting) into --json.",
    )
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.json)
        return

    import torch

    from synthset.adapt.tiny_base import BaseSettings, pretrain_tiny_base
    from synthset.data.splits import load_splits

    adapt_set, generate_set = _assignments(args.adapt_set), _assignments(args.generate_set)
    evaluate_set, curate_set = _assignments(args.evaluate_set), _assignments(args.curate_set)
    changed = ", ".join(args.adapt_set + args.generate_set + args.evaluate_set)
    if curate_set:
        changed = ", ".join([*filter(None, [changed]), "curate " + ", ".join(args.curate_set)])
    base_steps = 100 if args.quick else args.base_steps
    vae_steps = 50 if args.quick else 600
    results: dict[str, Any] = {}
    for setting in args.settings:
        per_seed: dict[str, dict[str, Any]] = {}
        for seed in args.seeds:
            detailed = setting == "A" and args.base_captions == "detailed"
            name = f"{setting}-detailed" if detailed else setting
            root = args.out / name / f"seed{seed}"
            splits_file = digits_split(seed, args.out / "splits" / f"seed{seed}")
            train = load_splits(splits_file, names=("train",))["train"]
            if setting == "A":
                settings = BaseSettings(
                    "generic",
                    None,
                    vae_steps=vae_steps,
                    steps=base_steps,
                    batch_size=args.base_batch,
                    seed=seed,
                )
                labels = range(10)
            else:
                settings = BaseSettings(
                    "class",
                    (0, 1, 2, 3, 4),
                    vae_steps=vae_steps,
                    steps=base_steps,
                    batch_size=args.base_batch,
                    seed=seed,
                )
                labels = range(5, 10)
            folder = words_folder(
                splits_file, args.out / "splits" / f"{setting}-seed{seed}", labels
            )
            real = {"source": "imagefolder", "path": str(folder)}
            classes: dict[str, Any] = {"names": [WORDS[i] for i in labels]}
            t = time.perf_counter()
            base = pretrain_tiny_base(
                train,
                WORDS,
                settings,
                args.out / "bases" / f"{name}-seed{seed}",
                False,
                captions=detailed_captions(train) if detailed else None,
            )
            rows: dict[str, Any] = {"base_s": round(time.perf_counter() - t, 1)}
            variants = [] if args.only_low_data else [(m, None) for m in args.methods]
            if setting == "A" and not args.skip_low_data:
                variants += [(m, 0.1) for m in args.methods if m not in ("floor", "ceiling")]
            for method, subset in variants:
                label = method if subset is None else f"{method}@real10%"
                per_class = 200 if subset is None else args.low_data_images
                if per_class != 200:
                    label += f" ({per_class} per class)"
                if subset is not None and args.low_data_epoch != "real":
                    label += f" ({args.low_data_epoch} epochs)"
                parts = method_recipe(method, base, args.quick, subset)
                if changed:
                    if parts["adapt"] is not None:
                        parts["adapt"] |= adapt_set
                    parts["generator"] |= generate_set
                    label += f" ({changed})"
                name = label.replace("@", "-").replace("%", "").replace(" ", "_").replace(",", "")
                name = re.sub(r"[{}\[\]:'\"]", "", name)
                out = root / name
                data = recipe_dict(
                    seed,
                    out,
                    real,
                    classes,
                    parts,
                    args.quick,
                    subset is not None,
                    per_class,
                    args.low_data_epoch,
                )
                data["evaluate"] |= evaluate_set
                if curate_set:
                    data["curate"] = curate_set
                rows[label] = run_one(data)
                print(f"{setting} seed {seed} {label}: {rows[label]}", flush=True)
            per_seed[str(seed)] = rows
        key = (
            "A (detailed captions)"
            if setting == "A" and args.base_captions == "detailed"
            else setting
        )
        results[key] = {"per_seed": per_seed, "summary": summarize(per_seed)}
    result = {
        "benchmark": "adapt_digits",
        "command": " ".join(["python benchmarks/adapt_digits.py", *sys.argv[1:]]),
        "seeds": args.seeds,
        "quick": args.quick,
        "base_steps": base_steps,
        "base_batch": args.base_batch,
        "settings": results,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v["summary"] for k, v in results.items()}, indent=2))


def _assignments(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict, each value read as YAML (numbers, booleans, text)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"expected KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def merge(files: list[Path], out: Path) -> None:
    """One result file from several runs' files: every (setting, seed, method) row (a later
    file's row wins; a seed's ``base_s`` is the first file's, as later runs reuse the base),
    summaries redone and the runs' commands joined."""
    merged: dict[str, Any] | None = None
    for path in files:
        data = json.loads(path.read_text())
        if merged is None:
            merged = data | {"settings": {}}
        for setting, block in data["settings"].items():
            rows = merged["settings"].setdefault(setting, {"per_seed": {}})["per_seed"]
            for seed, row in block["per_seed"].items():  # methods of one seed run apart
                target = rows.setdefault(seed, {})
                for key, value in row.items():  # a method's row: the later file's wins; the
                    if isinstance(value, dict) or key not in target:  # base's time: the first
                        target[key] = value
    assert merged is not None
    for block in merged["settings"].values():
        block["per_seed"] = dict(sorted(block["per_seed"].items()))
        block["summary"] = summarize(block["per_seed"])
    seeds = {k: sorted(int(s) for s in b["per_seed"]) for k, b in merged["settings"].items()}
    merged["seeds"] = seeds
    commands = [json.loads(path.read_text()).get("command") for path in files]
    merged["command"] = "; ".join(dict.fromkeys(c for c in commands if c))
    merged.pop("status", None)
    out.write_text(json.dumps(merged, indent=2) + "\n")


def summarize(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds of every (method, train set) accuracy and of the timings; a row
    run on only some seeds (a one-off variant) is summarized over those and names them."""
    out: dict[str, Any] = {}
    labels = list(
        dict.fromkeys(
            k for rows in per_seed.values() for k, v in rows.items() if isinstance(v, dict)
        )
    )
    for label in labels:
        seeds = [seed for seed, rows in per_seed.items() if label in rows]
        runs = [per_seed[seed][label] for seed in seeds]
        sets = runs[0]["test_accuracy"]
        entry: dict[str, Any] = {s: mean_std([r["test_accuracy"][s] for r in runs]) for s in sets}
        for key in ("adapt_s", "images_per_s", *FIDELITY, "class_recall"):
            have = [seed for seed, r in zip(seeds, runs, strict=True) if r.get(key) is not None]
            if have:
                entry[key] = mean_std([per_seed[seed][label][key] for seed in have])
                if len(have) < len(runs):  # e.g. a metric older runs did not record
                    entry[key]["seeds"] = [int(seed) for seed in have]
        if len(seeds) < len(per_seed):
            entry["seeds"] = [int(seed) for seed in seeds]
        out[label] = entry
    return out


if __name__ == "__main__":
    main()
