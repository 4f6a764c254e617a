"""Images/s per generation mode: synthset against a plain diffusers loop, measured in one run.

For each mode (text2image, img2img, inpaint) both contenders use the same tiny Stable Diffusion
pipeline (built offline, loaded with ``from_pretrained``), the same plan (prompts, seeds, real
images, strength, box mask), steps, guidance, resolution and batch size, and both write every
image as a PNG file. The plain loop is what a user writes by hand: open each real image, resize,
call the batched pipeline with one seeded generator per image, paste the kept region back
(inpaint) and ``img.save``. Its images are checked to be pixel-identical to synthset's, so the
two really do the same work. Model loading is excluded; rounds alternate the order and the
median is reported.

A third, instrumented synthset pass splits the cost: seconds inside the text encoder, UNet,
VAE encoder and VAE decoder (forward hooks), and the PNG encode + write of the same images when
done inline (synthset does this in a worker pool, overlapped with the next batch).

    python benchmarks/modes_throughput.py [--images 48] [--batch-size 8] [--rounds 2]

Writes ``benchmarks/results/modes_throughput.json``.
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
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = ["zero", "one", "two", "three"]
BOX = (0.2, 0.2, 0.8, 0.8)
MODES = ("text2image", "img2img", "inpaint")


def write_real_folder(root: Path, per_class: int, size: int) -> Path:
    """An ImageFolder of the bundled digits (first four classes), upscaled to RGB ``size`` px."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        rows = np.flatnonzero(digits.target == c)[:per_class]
        for i, row in enumerate(rows):
            gray = (digits.images[row] * (255 / 16)).astype(np.uint8)
            img = Image.fromarray(gray).resize((size, size), Image.Resampling.BICUBIC)
            img.convert("RGB").save(root / name / f"{i}.png")
    return root


def make_recipe(mode: str, model: Path, real: Path, out: Path, args: argparse.Namespace) -> Any:
    from synthset.recipe import recipe_from_dict

    generator: dict[str, Any] = {
        "kind": mode,
        "model": str(model),
        "steps": args.steps,
        "guidance_scale": 2.0,
        "height": args.size,
        "width": args.size,
        "device": "cpu",
    }
    if mode != "text2image":
        generator["strength"] = args.strength
    if mode == "inpaint":
        generator |= {"mask": "box", "mask_box": list(BOX)}
    data: dict[str, Any] = {
        "name": f"modes-{mode}",
        "output_dir": str(out),
        "classes": {"names": CLASSES},
        "prompts": {"template": "a photo of the digit {class}"},
        "generate": {
            "images_per_class": args.images // len(CLASSES),
            "batch_size": args.batch_size,
            "generator": generator,
        },
    }
    if mode != "text2image":
        # the train split (80%) holds at least images_per_class real images per class
        data["real"] = {"source": "imagefolder", "path": str(real), "val_fraction": 0.1,
                        "test_fraction": 0.1}  # fmt: skip
    return recipe_from_dict(data)


def prepare(recipe: Any) -> tuple[Any, list[Any], Any]:
    """Run folder, plan and loaded generator (loading is not timed)."""
    from synthset.pipeline import make_generator, open_run, stage_plan

    run = open_run(recipe)
    plan = stage_plan(recipe, run)
    return run, plan, make_generator(recipe, run)


def time_synthset(recipe: Any, run: Any, plan: list[Any], generator: Any) -> float:
    """Seconds for ``run_generation`` (the body of ``synthset generate``) with a loaded model."""
    from synthset.executors.local import run_generation
    from synthset.pipeline import item_configs
    from synthset.store.manifest import Manifest

    shutil.rmtree(run.images, ignore_errors=True)
    run.manifest.unlink(missing_ok=True)
    start = time.perf_counter()
    result = run_generation(
        plan,
        lambda: generator,
        recipe.generate,
        run.images,
        Manifest(run.manifest),
        item_configs(recipe),
        progress=False,
    )
    seconds = time.perf_counter() - start
    assert result.generated == len(plan), result
    return seconds


def plain_pipeline(mode: str, model: Path) -> Any:
    import diffusers

    auto = {
        "text2image": diffusers.AutoPipelineForText2Image,
        "img2img": diffusers.AutoPipelineForImage2Image,
        "inpaint": diffusers.AutoPipelineForInpainting,
    }[mode]
    pipe = auto.from_pretrained(str(model), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def box_mask(size: int) -> Any:
    from PIL import Image, ImageDraw

    mask = Image.new("L", (size, size), 255)  # white = repaint: the background
    x0, y0, x1, y1 = (round(f * size) for f in BOX)
    ImageDraw.Draw(mask).rectangle((x0, y0, x1 - 1, y1 - 1), fill=0)
    return mask


def time_plain_loop(mode: str, pipe: Any, recipe: Any, run: Any, plan: list[Any], out: Path):
    """Seconds for the hand-written loop; images saved as ``out/<item_id>.png``."""
    import torch
    from PIL import Image

    spec = recipe.generate.generator
    size, batch = args_size(spec), recipe.generate.batch_size
    mask = box_mask(size) if mode == "inpaint" else None
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    for i in range(0, len(plan), batch):
        items = plan[i : i + batch]
        kwargs: dict[str, Any] = {
            "prompt": [it.prompt for it in items],
            "num_inference_steps": spec.steps,
            "guidance_scale": spec.guidance_scale,
            "generator": [torch.Generator().manual_seed(it.seed) for it in items],
        }
        if mode == "text2image":
            kwargs |= {"height": size, "width": size}
        else:
            images = []
            for it in items:
                with Image.open(run.root / it.params["image"]) as img:
                    images.append(img.convert("RGB").resize((size, size), Image.Resampling.LANCZOS))
            kwargs |= {"image": images, "strength": spec.strength}
        if mode == "inpaint":
            kwargs |= {"mask_image": [mask] * len(items), "height": size, "width": size}
        with torch.inference_mode():
            outputs = pipe(**kwargs).images
        if mode == "inpaint":
            outputs = [
                Image.composite(o.convert("RGB"), im, mask)
                for o, im in zip(outputs, images, strict=True)
            ]
        for it, img in zip(items, outputs, strict=True):
            img.save(out / f"{it.item_id}.png")
    return time.perf_counter() - start


def args_size(spec: Any) -> int:
    return int(spec.width)


def same_images(run: Any, plan: list[Any], plain: Path) -> bool:
    """Whether the plain loop's images equal synthset's, pixel for pixel."""
    import numpy as np
    from PIL import Image

    from synthset.plan import image_relpath

    for it in plan:
        a = np.asarray(Image.open(run.images / image_relpath(it, "png")).convert("RGB"))
        b = np.asarray(Image.open(plain / f"{it.item_id}.png").convert("RGB"))
        if not np.array_equal(a, b):
            return False
    return True


def cost_split(recipe: Any, run: Any, plan: list[Any], generator: Any) -> dict[str, float]:
    """Seconds per part: text encoder, UNet, VAE encoder/decoder (forward hooks around the
    modules of the generator's own pipeline), and inline PNG encode + atomic write."""
    from PIL import Image

    from synthset.plan import image_relpath
    from synthset.store.imagefolder import encode_image, write_image

    pipe = generator.pipe
    parts = {
        "text_encoder": pipe.text_encoder,
        "unet": pipe.unet,
        "vae_encoder": pipe.vae.encoder,
        "vae_decoder": pipe.vae.decoder,
    }
    spent: dict[str, float] = defaultdict(float)
    started: dict[str, float] = {}
    handles = []
    for name, module in parts.items():

        def pre(_m: Any, _a: Any, name: str = name) -> None:
            started[name] = time.perf_counter()

        def post(_m: Any, _a: Any, _o: Any, name: str = name) -> None:
            spent[name] += time.perf_counter() - started[name]

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        total = time_synthset(recipe, run, plan, generator)
    finally:
        for h in handles:
            h.remove()
    start = time.perf_counter()
    scratch = run.root / "encode-scratch"
    for it in plan:
        with Image.open(run.images / image_relpath(it, "png")) as img:
            pixels = img.convert("RGB")
        write_image(scratch, image_relpath(it, "png"), encode_image(pixels, "png"))
    spent["encode_write_inline"] = time.perf_counter() - start
    shutil.rmtree(scratch, ignore_errors=True)
    accounted = sum(v for k, v in spent.items() if k != "encode_write_inline")
    spent["other_pipeline_and_scheduler"] = max(0.0, total - accounted)
    spent["total_synthset"] = total
    return {k: round(v, 3) for k, v in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--strength", type=float, default=0.75)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args()

    import torch

    from synthset.testing import build_tiny_sd_pipeline

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = build_tiny_sd_pipeline(tmp / "tiny-sd")
        per_class = args.images // len(CLASSES)
        real = write_real_folder(tmp / "real", per_class * 5 // 4 + 4, args.size)
        for mode in args.modes:
            recipe = make_recipe(mode, model, real, tmp / mode, args)
            run, plan, generator = prepare(recipe)
            pipe = plain_pipeline(mode, model)
            plain_out = tmp / f"{mode}-plain"
            contenders = {
                "synthset": partial(time_synthset, recipe, run, plan, generator),
                "plain_loop": partial(time_plain_loop, mode, pipe, recipe, run, plan, plain_out),
            }
            contenders["plain_loop"]()  # warm-up, not counted
            seconds: dict[str, list[float]] = {k: [] for k in contenders}
            names = list(contenders)
            for r in range(args.rounds):
                for name in names[r % 2 :] + names[: r % 2]:
                    seconds[name].append(contenders[name]())
            identical = same_images(run, plan, plain_out)
            ips = {k: len(plan) / statistics.median(v) for k, v in seconds.items()}
            results[mode] = {
                "images": len(plan),
                "images_per_second": {k: round(v, 3) for k, v in ips.items()},
                "seconds": {k: [round(s, 3) for s in v] for k, v in seconds.items()},
                "ratio_synthset_vs_plain": round(ips["synthset"] / ips["plain_loop"], 3),
                "identical_images": identical,
                "cost_split_seconds": cost_split(recipe, run, plan, generator),
            }
            print(mode, json.dumps(results[mode]), flush=True)

    result = {
        "benchmark": "modes_throughput",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "strength": args.strength,
        "resolution": args.size,
        "rounds": args.rounds,
        "modes": results,
        "target": "synthset >= 1.0x the plain diffusers loop in every mode",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "modes_throughput.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
