"""Export time and peak memory at 1,000 and 10,000 images (CPU): memory must not grow with the set.

A toy digits run generates 1,000 images per class (8×8 PNGs, 10,000 in all); each export format
then runs in a fresh process on the first 1,000 and on all 10,000 images, and reports seconds,
images/s and how far the resident memory rose above its level before the export (sampled every
5 ms while it runs).

    python benchmarks/export_throughput.py [--out runs/export-bench]
        [--json benchmarks/results/export_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
FORMATS = ["imagefolder", "webdataset", "hf", "parquet", "stream"]
TOY = [
    "adapt.channels=[8, 16]",
    "adapt.steps=200",
    "adapt.batch_size=64",
    "generate.images_per_class=1000",
    "generate.batch_size=500",
    "generate.generator.steps=4",
    "report.enabled=false",
]

CHILD = r"""
import json, sys, threading, time
from pathlib import Path
from synthset.classes import read_classes
from synthset.export.run import export_all
from synthset.recipe import ExportSpec
from synthset.store.imagefolder import read_rows
run, fmt, n, dest = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
import datasets, webdataset  # imported before the baseline: their footprint is not the export's
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
rows = read_rows(run / "images")[:n]
spec = ExportSpec(formats=[fmt], out_dir=dest)
base, peak, done = rss(), [0.0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.005)
watcher = threading.Thread(target=sample)
watcher.start()
start = time.perf_counter()
export_all(spec, rows, read_classes(run / "classes.json"), run / "images", dest, 0, False)
seconds = time.perf_counter() - start
done.set()
watcher.join()
growth = max(0.0, peak[0] - base)
print(json.dumps({"seconds": round(seconds, 2), "rss_growth_mib": round(growth, 1),
                  "rss_before_mib": round(base, 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/export-bench"))
    parser.add_argument("--json", type=Path, default=RESULTS / "export_throughput.json")
    args = parser.parse_args()

    from synthset.cli import bundled_recipe
    from synthset.pipeline import run_stage
    from synthset.recipe import load_recipe
    from synthset.store.run_folder import RunFolder

    run = args.out / "run"
    recipe = load_recipe(bundled_recipe("digits"), [f"output_dir={run}", *TOY])
    run_stage("generate", recipe, RunFolder(run), progress=False)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for fmt in FORMATS:
        rows[fmt] = {}
        for n in (1000, 10000):
            dest = args.out / f"{fmt}-{n}"
            out = (
                subprocess.run(
                    [sys.executable, "-c", CHILD, str(run), fmt, str(n), str(dest)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            result = json.loads(out)
            result["images_per_s"] = round(n / result["seconds"], 1)
            rows[fmt][str(n)] = result
            print(fmt, n, result, flush=True)
    data = {
        "benchmark": "export_throughput",
        "command": "python benchmarks/export_throughput.py",
        "images": "8x8 PNG digits (the toy digits run), first 1,000 and all 10,000",
        "formats": rows,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "python": sys.version.split()[0],
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
