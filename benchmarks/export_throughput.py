"""Export time and peak memory at 1,000 and 10,000 images (CPU): memory must not grow with the set.

A toy digits run generates 1,000 images per class (8×8 PNGs, 10,000 in all); each export format
then runs in a fresh process on the first 1,000 and on all 10,000 images, and reports seconds,
images/s and how far the resident memory rose above its level before the export (sampled every
5 ms while it runs).

The box and mask formats (yolo, coco) need labels: the ``labels`` row runs the real labels stage
(threshold, regions, box, polygon, instance-mask files, the table) with a stand-in source, each
digit's own ink, since the toy generator records no attention; yolo and coco then read them.

    python benchmarks/export_throughput.py [--out runs/export-bench] [--formats labels yolo ...]
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
FORMATS = ["imagefolder", "webdataset", "hf", "parquet", "stream", "labels", "yolo", "coco"]
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
import numpy as np
from PIL import Image
from synthset.export.run import export_all
from synthset.labels.run import label_all
from synthset.labels.sources import LABEL_SOURCES, map_candidates
from synthset.recipe import ExportSpec, LabelsSpec
from synthset.store.imagefolder import read_rows
run, fmt, n, dest = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
labels_dir = Path(sys.argv[5]) if len(sys.argv) > 5 else None
def ink_source(spec, class_names):  # the stand-in labeler: each digit's own ink, its class
    def find(root, row, size):
        ink = np.asarray(Image.open(row["path"]).convert("L"), dtype=np.float32) / 255.0
        return map_candidates(spec, {int(row["label"]): ink}, 0.35)
    return find
LABEL_SOURCES.entries["ink"] = "__main__:ink_source"
import datasets, webdataset  # imported before the baseline: their footprint is not the export's
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
rows = read_rows(run / "images")[:n]
spec = ExportSpec(formats=[fmt], out_dir=dest) if fmt != "labels" else None
base, peak, done = rss(), [0.0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.005)
watcher = threading.Thread(target=sample)
watcher.start()
start = time.perf_counter()
classes = read_classes(run / "classes.json")
if fmt == "labels":
    labels = LabelsSpec.model_construct(**{**LabelsSpec().model_dump(), "method": "ink"})
    label_all(labels, rows, [c.name for c in classes], run, dest, False)
else:
    export_all(spec, rows, classes, run / "images", dest, 0, False, labels_dir=labels_dir)
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
    parser.add_argument("--formats", nargs="+", default=FORMATS, choices=FORMATS)
    parser.add_argument(
        "--merge", action="store_true", help="keep the JSON's other formats (rerun only these)"
    )
    args = parser.parse_args()

    from synthset.cli import bundled_recipe
    from synthset.pipeline import run_stage
    from synthset.recipe import load_recipe
    from synthset.store.run_folder import RunFolder

    run = args.out / "run"
    recipe = load_recipe(bundled_recipe("digits"), [f"output_dir={run}", *TOY])
    run_stage("generate", recipe, RunFolder(run), progress=False)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    if args.merge and args.json.exists():
        rows = json.loads(args.json.read_text())["formats"]
    for fmt in args.formats:
        rows[fmt] = {}
        for n in (1000, 10000):
            dest = args.out / f"{fmt}-{n}"
            extra = [str(args.out / f"labels-{n}")] if fmt in ("yolo", "coco") else []
            out = (
                subprocess.run(
                    [sys.executable, "-c", CHILD, str(run), fmt, str(n), str(dest), *extra],
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
        "labels": "the labels stage with each digit's ink as the source (one object per image); "
        "yolo (detect) and coco (polygons) read those labels",
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
