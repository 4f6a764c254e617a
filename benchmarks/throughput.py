"""Throughput of ``synthset generate`` against plain diffusers loops, measured in one run.

Same tiny Stable Diffusion pipeline (built offline, loaded with ``from_pretrained``), same prompts,
steps, guidance, resolution and batch size; every loop writes its images as PNG files. Model
loading is excluded from all three timings. Rounds alternate the order of the contenders and the
median images/s is reported.

    python benchmarks/throughput.py [--images 96] [--batch-size 8] [--rounds 3]

Writes ``benchmarks/results/throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = ["cat", "dog", "ship", "truck"]


def make_recipe(model: Path, out: Path, images: int, batch_size: int, steps: int, size: int):
    from synthset.recipe import recipe_from_dict

    return recipe_from_dict(
        {
            "name": "throughput",
            "output_dir": str(out),
            "classes": {"names": CLASSES},
            "prompts": {"template": "a photo of a {class}"},
            "generate": {
                "images_per_class": images // len(CLASSES),
                "batch_size": batch_size,
                "generator": {
                    "kind": "text2image",
                    "model": str(model),
                    "steps": steps,
                    "guidance_scale": 2.0,
                    "height": size,
                    "width": size,
                    "device": "cpu",
                },
            },
        }
    )


def time_synthset(recipe, generator) -> float:
    """Seconds for ``run_generation`` (the body of ``synthset generate``) with a loaded model."""
    from synthset.classes import resolve_classes
    from synthset.executors.local import run_generation
    from synthset.pipeline import generation_config
    from synthset.plan import build_plan
    from synthset.store.manifest import Manifest
    from synthset.store.run_folder import RunFolder

    run = RunFolder(recipe.output_dir)
    shutil.rmtree(run.root, ignore_errors=True)
    plan = build_plan(recipe, resolve_classes(recipe.classes))
    start = time.perf_counter()
    result = run_generation(
        plan,
        lambda: generator,
        recipe.generate,
        run.images,
        Manifest(run.manifest),
        generation_config(recipe),
        progress=False,
    )
    seconds = time.perf_counter() - start
    assert result.generated == len(plan)
    return seconds


def time_plain_loop(pipe, recipe, out: Path, batch_size: int) -> float:
    """Seconds for a plain diffusers loop: batched pipeline calls, then ``img.save`` each PNG."""
    import torch

    from synthset.classes import resolve_classes
    from synthset.plan import build_plan

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    spec = recipe.generate.generator
    plan = build_plan(recipe, resolve_classes(recipe.classes))
    start = time.perf_counter()
    for i in range(0, len(plan), batch_size):
        batch = plan[i : i + batch_size]
        gens = [torch.Generator().manual_seed(it.seed) for it in batch]
        with torch.inference_mode():
            images = pipe(
                prompt=[it.prompt for it in batch],
                num_inference_steps=spec.steps,
                guidance_scale=spec.guidance_scale,
                height=spec.height,
                width=spec.width,
                generator=gens,
            ).images
        for it, img in zip(batch, images, strict=True):
            img.save(out / f"{it.item_id}.png")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--contenders",
        nargs="+",
        default=["synthset", "plain_batched", "plain_one_at_a_time"],
        help="which loops to time (the one-at-a-time loop is the slowest to run)",
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "throughput.json")
    args = parser.parse_args()

    import torch
    from diffusers import AutoPipelineForText2Image

    from synthset.generators.text2image import Text2ImageGenerator
    from synthset.testing import build_tiny_sd_pipeline

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = build_tiny_sd_pipeline(tmp / "tiny-sd")
        recipe = make_recipe(
            model, tmp / "run", args.images, args.batch_size, args.steps, args.size
        )
        n = recipe.generate.images_per_class * len(CLASSES)
        generator = Text2ImageGenerator(recipe.generate.generator)
        pipe = AutoPipelineForText2Image.from_pretrained(str(model), safety_checker=None)
        pipe.set_progress_bar_config(disable=True)

        contenders = {
            "synthset": lambda: time_synthset(recipe, generator),
            "plain_batched": lambda: time_plain_loop(pipe, recipe, tmp / "plain", args.batch_size),
            "plain_one_at_a_time": lambda: time_plain_loop(pipe, recipe, tmp / "single", 1),
        }
        contenders = {k: v for k, v in contenders.items() if k in args.contenders}
        time_plain_loop(pipe, recipe, tmp / "warmup", args.batch_size)  # warm-up, not counted
        seconds: dict[str, list[float]] = {k: [] for k in contenders}
        names = list(contenders)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                seconds[name].append(contenders[name]())

    ips = {k: n / statistics.median(v) for k, v in seconds.items()}
    result = {
        "benchmark": "throughput",
        "images": n,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "resolution": args.size,
        "rounds": args.rounds,
        "images_per_second": {k: round(v, 3) for k, v in ips.items()},
        "seconds": {k: [round(s, 3) for s in v] for k, v in seconds.items()},
        **{
            name: round(ips[a] / ips[b], 3)
            for name, a, b in [
                ("ratio_synthset_vs_plain_batched", "synthset", "plain_batched"),
                ("ratio_synthset_vs_one_at_a_time", "synthset", "plain_one_at_a_time"),
                ("ratio_plain_batched_vs_one_at_a_time", "plain_batched", "plain_one_at_a_time"),
            ]
            if a in ips and b in ips
        },
        "target": "synthset >= 1.0x plain batched loop",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
    }
    path = args.json
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
