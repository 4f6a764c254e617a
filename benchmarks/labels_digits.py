"""Cross-attention labels on digits (CPU, offline): does the mask of the digit's word find the
digit the model drew?

A tiny text-conditional Stable Diffusion pipeline (``synthset.adapt.tiny_base``, cross-attention
at the half-resolution blocks as well as the middle) is pretrained on scikit-learn's 8x8 digits
pasted at a random place on a 16x16 black canvas, captioned "a handwritten digit 3" and so on:
where the digit goes is up to the noise, not the caption. synthset then generates digits with
the prompt "a handwritten digit {class}" through its own pipeline (``text2image`` on the saved
pipeline folder, ``labels.method: cross_attention``), and the labels stage turns each image's
heat map into a mask (Otsu) and a box. Two heat maps, on the same images: ``attention`` (the
digit token's cross-attention, DAAM) and ``guidance`` (where the prompt changes the UNet's
prediction: |conditional - unconditional|, summed over steps, as DiffEdit masks).

Each label is compared with the digit's own ink in the generated image (pixels above 0.35 of
full scale): mask IoU, and box IoU against the ink's bounding box. Baselines: a centred box of
the mean ink-box size (what a labeler that ignores the image gets), the whole canvas, and the
ink's own bounding box as a mask (the best any box-shaped mask can do). The recorder's cost is
the generation time with it against without it, on the same items.

    python benchmarks/labels_digits.py [--seeds 0 1 2] [--out runs/labels-digits]
        [--json benchmarks/results/labels_digits.json] [--quick] [--text-layers N] [--pairs F]

``--seeds``: recipe seeds (different noise, so different images) on one pretrained base.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import mean_std
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"
CANVAS = 16
INK = 0.35  # a pixel is ink above this fraction of full scale (tiny_base.INK_LEVEL)


def digit_split() -> dict[str, list[int]]:
    """A stratified 75 / 25 split of the bundled digits' indices (seed 0): the base model
    learns from 'train' only; 'test' is held out (the detection benchmark's real test set)."""
    from sklearn.model_selection import train_test_split

    from synthset.data.real import digits_arrays

    _, labels = digits_arrays()
    train, test = train_test_split(
        np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=0
    )
    return {"train": sorted(int(i) for i in train), "test": sorted(int(i) for i in test)}


def canvas_digits(
    root: Path, indices: list[int], seed: int
) -> list[tuple[Path, int, tuple[int, int, int, int]]]:
    """Each chosen bundled digit at a seeded random place on a black CANVAS x CANVAS image:
    (file, label, the ink's box on the canvas)."""
    from synthset.data.real import digits_arrays
    from synthset.labels.shapes import box_of

    images, labels = digits_arrays()
    rng = np.random.default_rng(seed)
    samples = []
    for i in indices:
        img, lbl = images[i], int(labels[i])
        y, x = (int(v) for v in rng.integers(0, CANVAS - 8 + 1, size=2))
        canvas = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
        canvas[y : y + 8, x : x + 8] = img
        path = root / str(lbl) / f"{i:04d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(canvas).convert("RGB").save(path)
        samples.append((path, lbl, box_of(canvas / 255.0 > INK)))
    return samples


def pair_canvases(
    root: Path, indices: list[int], count: int, seed: int
) -> list[tuple[Path, int, str]]:
    """``count`` canvases with two bundled digits of different classes, side by side or stacked
    (which one where, and in which order the caption names them, drawn independently):
    (file, first named class, caption). The caption names both, so each region of the canvas
    needs its own word: the incentive for words to localise in the cross-attention."""
    from synthset.adapt.tiny_base import CLASS_FORMS
    from synthset.data.real import digits_arrays

    images, labels = digits_arrays()
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        a, b = (int(i) for i in rng.choice(indices, size=2, replace=False))
        while labels[b] == labels[a]:
            b = int(rng.choice(indices))
        canvas = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
        offsets = rng.integers(0, CANVAS - 8 + 1, size=2)
        first, second = (a, b) if rng.random() < 0.5 else (b, a)
        if rng.random() < 0.5:  # side by side
            canvas[offsets[0] : offsets[0] + 8, :8] = images[first]
            canvas[offsets[1] : offsets[1] + 8, 8:] = images[second]
        else:  # stacked
            canvas[:8, offsets[0] : offsets[0] + 8] = images[first]
            canvas[8:, offsets[1] : offsets[1] + 8] = images[second]
        named = [int(labels[a]), int(labels[b])]
        if rng.random() < 0.5:
            named.reverse()
        form = CLASS_FORMS[k % len(CLASS_FORMS)]
        caption = " and ".join(form.format(name=c) for c in named)
        path = root / "pairs" / f"{k:05d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(canvas).convert("RGB").save(path)
        out.append((path, named[0], caption))
    return out


def box_iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def box_mask(box: tuple[int, ...], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    return mask


def score_run(run_root: Path, label: str = "attention") -> dict[str, Any]:
    """Mask and box IoU of every label (reported as ``label``) against its image's ink, and
    the baselines."""
    from synthset.labels.shapes import box_of, mask_iou
    from synthset.store.atomic import read_jsonl
    from synthset.store.labels import ATTENTION_FOLDER, read_heat_maps

    rows = read_jsonl(run_root / "labels" / "labels.jsonl")
    inks, found, correlations = [], [], []
    for row in rows:
        grey = np.asarray(Image.open(run_root / "images" / row["file_name"]).convert("L"))
        ink = grey / 255.0 > INK
        if not ink.any():
            continue
        inks.append(ink)
        maps_file = (run_root / ATTENTION_FOLDER / row["file_name"]).with_suffix(".npz")
        heat = read_heat_maps(maps_file.read_bytes())[row["label"]]
        if heat.shape == ink.shape and heat.std() > 0:
            correlations.append(float(np.corrcoef(heat.ravel(), ink.ravel())[0, 1]))
        instances = np.asarray(Image.open(run_root / "labels" / row["mask_file"]))
        own = [k for k, o in enumerate(row["objects"], 1) if o["class_id"] == row["label"]]
        mask = np.isin(instances, own)
        box = tuple(row["objects"][own[0] - 1]["box"]) if own else (0, 0, 0, 0)
        found.append((mask, box))
    ink_boxes = [box_of(ink) for ink in inks]
    mean_w = round(statistics.mean(b[2] - b[0] for b in ink_boxes))
    mean_h = round(statistics.mean(b[3] - b[1] for b in ink_boxes))
    x0, y0 = (CANVAS - mean_w) // 2, (CANVAS - mean_h) // 2
    centred = (x0, y0, x0 + mean_w, y0 + mean_h)
    shape = (CANVAS, CANVAS)
    whole = np.ones(shape, dtype=bool)
    label_iou = [mask_iou(m, ink) for (m, _), ink in zip(found, inks, strict=True)]
    label_box = [box_iou(b, ib) for (_, b), ib in zip(found, ink_boxes, strict=True)]
    return {
        "images": len(rows),
        "images_with_ink": len(inks),
        "own_object_found": sum(1 for m, _ in found if m.any()),
        "mask_iou": {
            label: round(statistics.mean(label_iou), 4),
            "centred_box": round(
                statistics.mean(mask_iou(box_mask(centred, shape), ink) for ink in inks), 4
            ),
            "whole_canvas": round(statistics.mean(mask_iou(whole, ink) for ink in inks), 4),
            "ink_box_oracle": round(
                statistics.mean(
                    mask_iou(box_mask(b, shape), ink)
                    for b, ink in zip(ink_boxes, inks, strict=True)
                ),
                4,
            ),
        },
        "box_iou": {
            label: round(statistics.mean(label_box), 4),
            "centred_box": round(statistics.mean(box_iou(centred, b) for b in ink_boxes), 4),
            f"{label}_at_0.5": round(sum(v >= 0.5 for v in label_box) / len(label_box), 4),
            "centred_box_at_0.5": round(
                sum(box_iou(centred, b) >= 0.5 for b in ink_boxes) / len(ink_boxes), 4
            ),
        },
        "mean_ink_box": [mean_w, mean_h],
        # per image, the heat map's correlation with the ink (the sign says whether it localises)
        f"{label}_heat_ink_correlation": round(statistics.mean(correlations), 4)
        if correlations
        else None,
    }


def recorder_overhead(base: Path, steps: int, n: int) -> dict[str, float]:
    """Seconds to generate the same n images without and with the attention recorder."""
    from synthset.generators.attention import AttentionRecordingGenerator
    from synthset.generators.text2image import Text2ImageGenerator
    from synthset.plan import WorkItem
    from synthset.recipe import GeneratorSpec, LabelsSpec

    spec = GeneratorSpec(kind="text2image", model=str(base), steps=steps, guidance_scale=3.0)
    items = [
        WorkItem(f"o{i}", i % 10, str(i % 10), str(i % 10), f"a handwritten digit {i % 10}", i)
        for i in range(n)
    ]
    plain = Text2ImageGenerator(spec)
    traced = AttentionRecordingGenerator(
        Text2ImageGenerator(spec), LabelsSpec(), [str(c) for c in range(10)]
    )
    times = {}
    for name, gen in (("plain", plain), ("recorder", traced), ("plain_again", plain)):
        start = time.perf_counter()
        for k in range(0, n, 50):
            gen.generate(items[k : k + 50])
        times[name] = round(time.perf_counter() - start, 2)
    base_s = (times["plain"] + times["plain_again"]) / 2
    times["overhead"] = round(times["recorder"] / base_s - 1, 4)
    return times


def labels_recipe(
    seed: int,
    root: Path,
    base: Path,
    per_class: int,
    export: dict[str, Any] | None = None,
    heat: str = "attention",
) -> Any:
    """The benchmark's recipe for one seed: digits from ``base`` with cross-attention labels
    (``heat``: attention, or guidance; the same images either way)."""
    from synthset.recipe import recipe_from_dict

    data: dict[str, Any] = {
        "seed": seed,
        "output_dir": str(root / (f"seed{seed}" if heat == "attention" else f"seed{seed}-{heat}")),
        "classes": {"names": [str(c) for c in range(10)]},
        "prompts": {"template": "a handwritten digit {class}"},
        "generate": {
            "images_per_class": per_class,
            "batch_size": 50,
            "generator": {
                "kind": "text2image",
                "model": str(base),
                "steps": 30,
                "guidance_scale": 3.0,
            },
        },
        "labels": {"method": "cross_attention", "threshold": "otsu", "attention": {"heat": heat}},
    }
    if export is not None:
        data["export"] = export
    return recipe_from_dict(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/labels-digits"))
    parser.add_argument("--json", type=Path, default=RESULTS / "labels_digits.json")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    parser.add_argument("--base-steps", type=int, default=1500, help="the base's UNet steps")
    parser.add_argument("--vae-steps", type=int, default=400, help="the base's VAE steps")
    parser.add_argument("--per-class", type=int, default=50, help="generated digits per class")
    parser.add_argument(
        "--pooled-text",
        action="store_true",
        help="also feed the pooled caption into the time embedding (the default tiny base's "
        "shortcut past cross-attention)",
    )
    parser.add_argument(
        "--text-layers",
        type=int,
        default=3,
        help="the base's text encoder layers; 0: the class is only at its word (BaseSettings)",
    )
    parser.add_argument(
        "--pairs",
        type=float,
        default=0.0,
        help="add this many two-digit canvases per one-digit canvas to the base's training set, "
        "captioned with both digits (e.g. 0.5)",
    )
    args = parser.parse_args()

    from synthset.adapt.tiny_base import BaseSettings, pretrain_tiny_base
    from synthset.pipeline import open_run, stage_label

    steps, vae_steps, per_class = (
        (60, 40, 5) if args.quick else (args.base_steps, args.vae_steps, args.per_class)
    )
    names = [str(c) for c in range(10)]
    split = digit_split()
    samples = [(p, lbl) for p, lbl, _ in canvas_digits(args.out / "canvas", split["train"], 0)]
    captions = None
    if args.pairs:
        from synthset.adapt.tiny_base import class_captions

        captions = class_captions([lbl for _, lbl in samples], names)
        pairs = pair_canvases(
            args.out / "canvas", split["train"], round(args.pairs * len(samples)), 0
        )
        samples += [(p, lbl) for p, lbl, _ in pairs]
        captions += [caption for _, _, caption in pairs]
    settings = BaseSettings(
        "class",
        None,
        image_size=CANVAS,
        cross_attention="low",
        pooled_text=args.pooled_text,
        text_layers=args.text_layers,
        vae_steps=vae_steps,
        steps=steps,
        batch_size=64,
    )
    start = time.perf_counter()
    base = pretrain_tiny_base(samples, names, settings, args.out / "base", captions=captions)
    base_s = round(time.perf_counter() - start, 1)

    per_seed: dict[str, Any] = {}
    for seed in args.seeds:
        scores: dict[str, Any] = {}
        for heat in ("attention", "guidance"):
            recipe = labels_recipe(seed, args.out, base, per_class, heat=heat)
            run = open_run(recipe)
            t0 = time.perf_counter()
            stage_label(recipe, run, progress=True)
            seconds = round(time.perf_counter() - t0, 1)
            score = score_run(run.root, heat)
            if not scores:  # the same images: the baselines are the same
                scores = score | {"seconds": seconds}
                continue
            scores["mask_iou"][heat] = score["mask_iou"][heat]
            scores["box_iou"][heat] = score["box_iou"][heat]
            scores["box_iou"][f"{heat}_at_0.5"] = score["box_iou"][f"{heat}_at_0.5"]
            key = f"{heat}_heat_ink_correlation"
            scores[key] = score[key]
            scores[f"{heat}_seconds"] = seconds
        per_seed[str(seed)] = scores
        print(seed, json.dumps(per_seed[str(seed)]))

    def across(*path: str) -> dict[str, float]:
        values = []
        for result in per_seed.values():
            value: Any = result
            for key in path:
                value = value[key]
            values.append(float(value))
        return mean_std(values)

    summary = {
        "mask_iou": {k: across("mask_iou", k) for k in per_seed[str(args.seeds[0])]["mask_iou"]},
        "box_iou": {k: across("box_iou", k) for k in per_seed[str(args.seeds[0])]["box_iou"]},
        "heat_ink_correlation": {
            heat: across(f"{heat}_heat_ink_correlation") for heat in ("attention", "guidance")
        },
    }
    result = {
        "benchmark": "labels_digits",
        "command": "python benchmarks/labels_digits.py"
        + (" --quick" if args.quick else "")
        + (f" --pairs {args.pairs}" if args.pairs else "")
        + (f" --text-layers {args.text_layers}" if args.text_layers != 3 else "")
        + (f" --base-steps {args.base_steps}" if args.base_steps != 1500 else "")
        + (f" --vae-steps {args.vae_steps}" if args.vae_steps != 400 else "")
        + (f" --per-class {args.per_class}" if args.per_class != 50 else "")
        + f" --seeds {' '.join(map(str, args.seeds))}",
        "setup": {
            "canvas": f"{CANVAS}x{CANVAS}, one 8x8 digit at a random place",
            "base_pairs": f"{args.pairs} two-digit canvases per one-digit canvas, both named"
            if args.pairs
            else "none",
            "base_data": "the 75% train split of the bundled digits (stratified, seed 0)",
            "base": "tiny SD pipeline, class captions, cross-attention at 8x8 and 4x4 blocks, "
            + ("pooled caption in the time embedding" if args.pooled_text else "no pooled caption")
            + f", {args.text_layers} text encoder layers",
            "base_steps": steps,
            "generation": "text2image, DDIM 30 steps, guidance 3, "
            "prompt 'a handwritten digit {class}'",
            "labels": "cross_attention, Otsu threshold, largest region; heat attention (DAAM) "
            "and heat guidance (|conditional - unconditional| prediction, DiffEdit-style)",
            "ink": f"pixels above {INK} of full scale in the generated image",
            "images_per_seed": per_class * 10,
            "vae_steps": vae_steps,
        },
        "base_seconds": base_s,
        "summary": summary,
        "per_seed": per_seed,
        "recorder_overhead": recorder_overhead(base, 30, 50 if args.quick else 200),
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
