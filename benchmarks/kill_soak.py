"""Many SIGKILLs per executor: `synthset generate` under local (the process itself), queue with
2 workers (either worker or the driver) and ray with 2 actors (an actor, every fourth kill the
driver), killed at random moments until the plan is done; after each driver kill the command is
started again. Ends with every item once in the manifests and the images byte-identical to one
uninterrupted run.

    python benchmarks/kill_soak.py [--kills 15] [--images-per-class 60]
        [--json benchmarks/results/kill_soak.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from common import write_result
from scaling import RESULTS, cli, env, image_digest, prepared_toy, rows


def item_ids(run: Path) -> list[str]:
    ids = []
    for f in sorted(run.glob("manifest*.jsonl")):
        ids += [json.loads(line)["item_id"] for line in f.read_text().splitlines() if line]
    return ids


def processes_of(run: Path) -> list[psutil.Process]:
    """Every live process whose command line names the run folder (drivers, helpers)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(run) in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def ray_actors() -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if "BatchWorker" in " ".join(p.info["cmdline"] or [])
    ]


def victim(kind: str, proc: subprocess.Popen, run: Path, kills: int, rng: random.Random):
    """Whom to kill now: ('driver' | 'worker', process)."""
    if kind == "local":
        return "driver", psutil.Process(proc.pid)
    if kind == "queue":
        others = [p for p in processes_of(run) if p.pid != proc.pid]
        if others and rng.random() < 0.6:
            return "worker", rng.choice(others)
        return "driver", psutil.Process(proc.pid)
    actors = ray_actors()
    if actors and kills % 4 != 3:
        return "worker", rng.choice(actors)
    return "driver", psutil.Process(proc.pid)


def soak(kind: str, recipe: Path, base: Path, args: list[str], kills: int, seed: int) -> dict:
    rng = random.Random(seed)
    run = base.parent / f"soak-{kind}"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(base, run)
    command = cli("generate", str(recipe), "--out", str(run), "-q", *args)
    planned = len((base / "plan.jsonl").read_text().splitlines())
    done = {"driver": 0, "worker": 0}
    starts = 0
    start = time.perf_counter()
    while True:
        with (run.parent / f"{kind}-{starts}.log").open("w") as log:  # never an unread pipe
            proc = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=log)
        starts += 1
        while proc.poll() is None:
            if sum(done.values()) >= kills:
                proc.wait()
                break
            before = rows(run)
            deadline = time.time() + 900  # a Ray start on a busy machine takes minutes
            while rows(run) <= before and proc.poll() is None and time.time() < deadline:
                time.sleep(0.02)  # progress first, so the run always moves on
            if rows(run) <= before and proc.poll() is None:
                raise SystemExit(f"{kind}: no progress in 15 minutes; see {run.parent}/*.log")
            time.sleep(rng.uniform(0.0, 1.5))
            if proc.poll() is not None:
                break
            who, p = victim(kind, proc, run, sum(done.values()), rng)
            try:
                p.send_signal(signal.SIGKILL)
                done[who] += 1
            except psutil.NoSuchProcess:
                continue
            if who == "driver":
                proc.wait()
                break
        proc.wait()
        if proc.returncode == 0 and rows(run) >= planned:
            break
    for p in processes_of(run):  # a killed driver's helpers finish on their own
        p.wait(timeout=600)
    ids = item_ids(run)
    return {
        "kills": done,
        "commands_started": starts,
        "seconds": round(time.perf_counter() - start, 1),
        "items": len(ids),
        "unique_items": len(set(ids)),
        "planned": planned,
        "images": image_digest(run),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=15, help="SIGKILLs per executor")
    parser.add_argument("--images-per-class", type=int, default=60)
    parser.add_argument("--executors", nargs="+", default=["local", "queue", "ray"])
    parser.add_argument("--json", type=Path, default=RESULTS / "kill_soak.json")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak", dir="/tmp") as tmp:
        root = Path(tmp)
        recipe, base = prepared_toy(root, a.images_per_class)
        reference = root / "reference"
        shutil.copytree(base, reference)
        subprocess.run(
            cli("generate", str(recipe), "--out", str(reference), "-q"),
            env=env(),
            check=True,
            capture_output=True,
        )
        expected = image_digest(reference)
        ray_cli = str(Path(sys.executable).parent / "ray")
        if "ray" in a.executors:
            subprocess.run(
                [
                    ray_cli,
                    "start",
                    "--head",
                    "--port=6391",
                    "--num-cpus=2",
                    "--include-dashboard=false",
                    "--disable-usage-stats",
                    f"--temp-dir={root / 'ray'}",
                ],
                env=env(),
                check=True,
                capture_output=True,
            )
        configs = {
            "local": [],
            "queue": ["--executor", "queue", "--workers", "2", "--set", "generate.lease_seconds=5"],
            "ray": [
                "--executor",
                "ray",
                "--set",
                "generate.ray.address=127.0.0.1:6391",
                "--set",
                "generate.ray.concurrency=2",
            ],
        }
        results = {}
        try:
            for i, kind in enumerate(a.executors):
                res = soak(kind, recipe, base, configs[kind], a.kills, seed=i)
                res["identical_to_one_process"] = res.pop("images") == expected
                results[kind] = res
                print(kind, res, flush=True)
        finally:
            if "ray" in a.executors:
                subprocess.run([ray_cli, "stop", "--force"], env=env(), capture_output=True)
    if a.json.exists():  # executors soaked in an earlier call stay (rerun one with --executors)
        earlier = json.loads(a.json.read_text()).get("executors", {})
        results = {k: v for k, v in earlier.items() if k not in results} | results
    out = {
        "command": "python benchmarks/kill_soak.py --kills N [--executors ...]",
        "machine": {"python": platform.python_version(), "cpus": psutil.cpu_count()},
        "images_per_class": a.images_per_class,
        "kills_per_executor": a.kills,
        "executors": results,
        "all_exactly_once_and_identical": all(
            r["unique_items"] == r["items"] == r["planned"] and r["identical_to_one_process"]
            for r in results.values()
        ),
    }
    write_result(a.json, out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
