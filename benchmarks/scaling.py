"""Executors on this machine: images/s of `synthset generate` with the local, queue and ray
executors at 1 and 2 workers, against a plain single-process loop over the same generator and
batches; the lease queue's cost per batch; and how long a run takes to recover when a worker
is SIGKILLed halfway.

Every run is a fresh `synthset generate` process on a copy of one trained toy run folder (the
tiny digits model, 25 DDPM steps, batches of 6), one torch thread per worker, so 2 workers can
use the 2 cores. "total" is the whole command (Python start, model load, Ray start); "steady"
counts images from the first to the last manifest row, i.e. generation once started. Images
are checked byte-identical to the local run.

    python benchmarks/scaling.py [--images-per-class 60] [--rounds 2]
        [--json benchmarks/results/scaling.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

RESULTS = Path(__file__).resolve().parent / "results"

PLAIN = r"""
import sys, time
from pathlib import Path
import torch
from synthset.pipeline import open_run
from synthset.plan import chunks, load_plan
from synthset.recipe import load_recipe
from synthset.stages import make_generator
recipe = load_recipe(Path(sys.argv[1]), output_dir=Path(sys.argv[2]))
run = open_run(recipe)
plan = load_plan(run.plan)
out = Path(sys.argv[3])
start = time.perf_counter()
generator = make_generator(recipe, run)
first = None
for chunk in chunks(plan, recipe.generate.batch_size):
    for item, image in zip(chunk, generator.generate(chunk)):
        image.save(out / f"{item.item_id}.png")
    first = first or time.perf_counter()
print(len(plan), time.perf_counter() - start, first - start)
"""


def toy(images_per_class: int) -> dict:
    return {
        "name": "scaling",
        "seed": 11,
        "classes": {"dataset": "digits"},
        "real": {"source": "digits"},
        "adapt": {"image_size": 8, "channels": [8, 16], "steps": 20, "batch_size": 32},
        "prompts": {"template": "{class}"},
        "generate": {
            "images_per_class": images_per_class,
            "batch_size": 6,
            "writer_threads": 2,
            "generator": {"kind": "tiny", "steps": 25, "scheduler": "ddpm", "guidance_scale": 2.0},
        },
        "report": {"enabled": False},
    }


def prepared_toy(root: Path, images_per_class: int) -> tuple[Path, Path]:
    """The toy recipe in ``root`` and a run folder ``root/base`` with the model adapted and the
    plan written: what every executor run starts from (a copy of it)."""
    recipe = root / "toy.yaml"
    recipe.write_text(yaml.safe_dump(toy(images_per_class)))
    base = root / "base"
    for args in (["adapt", "-q"], ["plan"]):
        subprocess.run(
            cli(args[0], str(recipe), "--out", str(base), *args[1:]),
            env=env(),
            check=True,
            capture_output=True,
        )
    return recipe, base


def env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "RAY_AUTH_MODE": "disabled",
    }


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "synthset.cli", *args]


def rows(run: Path) -> int:
    return sum(
        1 for f in run.glob("manifest*.jsonl") for line in f.read_text().splitlines() if line
    )


def watch(proc: subprocess.Popen, run: Path, kill_at: float | None = None) -> dict[str, float]:
    """Poll the manifest every 20 ms until ``proc`` ends: total seconds, the time of the first
    and last row, and (``kill_at``: a fraction of the plan) when a worker was killed."""
    start = time.perf_counter()
    first = last = None
    seen = first_rows = 0
    killed_at = None
    while proc.poll() is None:
        n = rows(run)
        now = time.perf_counter() - start
        if n > seen:
            if first is None:
                first, first_rows = now, n
            last, seen = now, n
        if kill_at is not None and killed_at is None and n >= kill_at:
            killed_at = now
            kill_one_worker(proc)
        time.sleep(0.02)
    total = time.perf_counter() - start
    assert proc.returncode == 0, f"generate exited {proc.returncode}"
    return {
        "total_s": total,
        "first_row_s": first or total,
        "last_row_s": last or total,
        "rows_after_first": seen - first_rows,
        "killed_at_s": killed_at,
    }


def kill_one_worker(proc: subprocess.Popen) -> None:
    """SIGKILL a helper process of ``proc`` (queue) or a generator actor (ray)."""
    import psutil

    victims = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "BatchWorker" in " ".join(p.info["cmdline"] or [])
    ] or psutil.Process(proc.pid).children(recursive=True)
    if victims:
        victims[0].send_signal(signal.SIGKILL)


def run_executor(
    recipe: Path, base: Path, name: str, args: list[str], planned: int, kill_at: float | None = None
) -> dict[str, float]:
    run = base.parent / name
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(base, run)
    proc = subprocess.Popen(
        cli("generate", str(recipe), "--out", str(run), "-q", *args),
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    timing = watch(proc, run, None if kill_at is None else kill_at * planned)
    steady = timing["last_row_s"] - timing["first_row_s"]
    return {
        **timing,
        "images_per_s_total": planned / timing["total_s"],
        "images_per_s_steady": timing["rows_after_first"] / steady if steady > 0 else 0.0,
        "images": image_digest(run),
    }


def image_digest(run: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted((run / "images").rglob("*.png")):
        h.update(str(p.relative_to(run / "images")).encode() + p.read_bytes())
    return h.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images-per-class", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=RESULTS / "scaling.json")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        recipe, base = prepared_toy(root, a.images_per_class)
        planned = 10 * a.images_per_class
        ray_head = root / "ray"
        ray_cli = str(Path(sys.executable).parent / "ray")
        subprocess.run(
            [
                ray_cli,
                "start",
                "--head",
                "--port=6390",
                "--num-cpus=2",
                "--include-dashboard=false",
                "--disable-usage-stats",
                f"--temp-dir={ray_head}",
            ],
            env=env(),
            check=True,
            capture_output=True,
        )
        ray_args = ["--executor", "ray", "--set", "generate.ray.address=127.0.0.1:6390"]
        configs = {
            "local": [],
            "queue_1": ["--executor", "queue", "--workers", "1"],
            "queue_2": ["--executor", "queue", "--workers", "2"],
            "ray_1": [*ray_args, "--set", "generate.ray.concurrency=1"],
            "ray_2": [*ray_args, "--set", "generate.ray.concurrency=2"],
        }
        results: dict[str, list[dict]] = {k: [] for k in ["plain", *configs]}
        try:
            for _ in range(a.rounds):
                out = root / "plain"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                done = subprocess.run(
                    [sys.executable, "-c", PLAIN, str(recipe), str(base), str(out)],
                    env=env(),
                    check=True,
                    capture_output=True,
                    text=True,
                )
                n, total, first = done.stdout.split()
                results["plain"].append(
                    {
                        "total_s": float(total),
                        "first_row_s": float(first),
                        "images_per_s_total": int(n) / float(total),
                        "images_per_s_steady": (int(n) - 6) / (float(total) - float(first)),
                    }
                )
                for name, args in configs.items():
                    results[name].append(run_executor(recipe, base, name, args, planned))
                    print(
                        name,
                        {
                            k: round(v, 2) if isinstance(v, float) else v
                            for k, v in results[name][-1].items()
                        },
                        flush=True,
                    )
            recovery = {
                "queue_2_killed": run_executor(
                    recipe,
                    base,
                    "queue_2k",
                    [*configs["queue_2"], "--set", "generate.lease_seconds=5"],
                    planned,
                    kill_at=0.5,
                ),
                "ray_2_killed": run_executor(
                    recipe, base, "ray_2k", configs["ray_2"], planned, kill_at=0.5
                ),
            }
        finally:
            subprocess.run([ray_cli, "stop", "--force"], env=env(), capture_output=True)
    summary = {}
    for name, runs in results.items():
        summary[name] = {
            key: statistics.median(r[key] for r in runs)
            for key in ("total_s", "images_per_s_total", "images_per_s_steady")
        }
    plain = summary["plain"]["images_per_s_steady"]
    for s in summary.values():
        s["steady_vs_plain"] = s["images_per_s_steady"] / plain
    # a batch's time with the queue minus without it, from the steady rates (noise: ± a few ms)
    summary["queue_overhead_ms_per_batch"] = 6e3 * (
        1 / summary["queue_1"]["images_per_s_steady"] - 1 / summary["local"]["images_per_s_steady"]
    )
    for name, r in recovery.items():
        ref = summary[name.replace("_killed", "")]["total_s"]
        r["extra_s_vs_unkilled"] = r["total_s"] - ref
    same = {r["images"] for name in configs for r in results[name]} | {
        r["images"] for r in recovery.values()
    }
    payload = {
        "benchmark": "scaling",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {
            "images": planned,
            "batch_size": 6,
            "steps": 25,
            "rounds": a.rounds,
            "threads_per_worker": 1,
        },
        "images_identical_across_executors": len(same) == 1,
        "summary": summary,
        "recovery": recovery,
        "runs": results,
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(payload, indent=1))
    print(
        json.dumps(
            {
                "summary": summary,
                "recovery": recovery,
                "identical": payload["images_identical_across_executors"],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
