"""A detection dataset from generation alone, end to end (CPU, offline): synthset's cross-attention
labels of generated digits → YOLO export → Ultralytics trains a detector → mAP50 on real digits.

Run ``benchmarks/labels_digits.py`` first: it pretrains the tiny text-conditional pipeline on the
train split of the bundled digits (pasted at random places on a 16x16 canvas) and generates and
labels 50 digits per class per recipe seed. Here each seed's labeled set is exported with
``synthset export --format yolo`` (detection boxes, 10 % validation) and a YOLOv8n built from
its config (no weights downloaded) trains on it; the test set is the held-out **real** digits
(the 25 % test split, never seen by the generator) pasted at random places, with the ink's box
as the truth. Rows:

- ``attention labels``: synthetic images, boxes from the cross-attention masks;
- ``guidance labels``: the same images, boxes from the guidance masks (``heat: guidance``);
- ``centred boxes``: the same synthetic images, every box the mean box in the canvas centre (a
  labeler that ignores where the digit is);
- ``real, true boxes``: the real train-split canvases with their true boxes (the ceiling).

    python benchmarks/detect_digits.py [--runs runs/labels-digits] [--seeds 0 1 2]
        [--epochs 40] [--json benchmarks/results/detect_digits.json]

The point is an honest end-to-end path with its number, not a high number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import yaml
from common import mean_std
from labels_digits import CANVAS, canvas_digits, digit_split, labels_recipe

RESULTS = Path(__file__).resolve().parent / "results"


def write_split(root: Path, split: str, samples: list[tuple[Path, int, tuple[int, ...]]]) -> None:
    """A YOLO split folder from (image, class, box) triples."""
    for path, lbl, box in samples:
        name = f"{lbl}_{path.stem}"
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, root / "images" / split / f"{name}.png")
        x0, y0, x1, y1 = box
        line = f"{lbl} {(x0 + x1) / 2 / CANVAS} {(y0 + y1) / 2 / CANVAS} "
        line += f"{(x1 - x0) / CANVAS} {(y1 - y0) / CANVAS}\n"
        (root / "labels" / split / f"{name}.txt").write_text(line)


def data_yaml(path: Path, train: Path, val: Path) -> Path:
    names = {i: str(i) for i in range(10)}
    path.write_text(yaml.safe_dump({"train": str(train), "val": str(val), "names": names}))
    return path


def centred_copy(src: Path, dest: Path) -> Path:
    """The YOLO export with every box replaced by the mean box, centred."""
    shutil.copytree(src, dest, dirs_exist_ok=True)
    boxes = []
    for f in (dest / "labels").rglob("*.txt"):
        for line in f.read_text().splitlines():
            _, _, _, w, h = line.split()
            boxes.append((float(w), float(h)))
    w = statistics.mean(b[0] for b in boxes)
    h = statistics.mean(b[1] for b in boxes)
    for f in (dest / "labels").rglob("*.txt"):
        lines = [f"{ln.split()[0]} 0.5 0.5 {w:.6f} {h:.6f}" for ln in f.read_text().splitlines()]
        f.write_text("".join(f"{ln}\n" for ln in lines))
    for cache in dest.rglob("*.cache"):
        cache.unlink()
    return dest


def train_and_test(data: Path, test: Path, out: Path, epochs: int, seed: int) -> dict[str, Any]:
    """Train YOLOv8n on ``data``'s train split; mAP on the ``test`` yaml's val split."""
    from ultralytics import YOLO

    start = time.perf_counter()
    model = YOLO("yolov8n.yaml")
    model.train(
        data=str(data),
        epochs=epochs,
        imgsz=64,
        batch=32,
        device="cpu",
        workers=0,
        plots=False,
        amp=False,
        seed=seed,
        deterministic=True,
        project=str(out),
        name="train",
        exist_ok=True,
        verbose=False,
    )
    best = YOLO(str(out / "train" / "weights" / "best.pt"))
    metrics = best.val(data=str(test), imgsz=64, batch=64, device="cpu", plots=False)
    return {
        "mAP50": round(float(metrics.box.map50), 4),
        "mAP50-95": round(float(metrics.box.map), 4),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/labels-digits"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--json", type=Path, default=RESULTS / "detect_digits.json")
    args = parser.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(args.runs / "ultralytics-config"))

    from synthset.pipeline import open_run, stage_export

    work = args.runs / "detect"
    split = digit_split()
    real_test = work / "real"
    write_split(real_test, "test", canvas_digits(work / "canvas-test", split["test"], seed=1))
    write_split(real_test, "train", canvas_digits(args.runs / "canvas", split["train"], seed=0))
    test_yaml = data_yaml(
        work / "test.yaml", real_test / "images" / "test", real_test / "images" / "test"
    )

    rows: dict[str, dict[str, Any]] = {
        "attention labels": {},
        "guidance labels": {},
        "centred boxes": {},
    }
    for seed in args.seeds:
        export = {"formats": ["yolo"], "yolo_task": "detect", "val_fraction": 0.1}
        exports = {}
        for heat in ("attention", "guidance"):
            recipe = labels_recipe(seed, args.runs, args.runs / "base", 50, export, heat)
            run = open_run(recipe)
            stage_export(recipe, run, progress=False)
            exports[heat] = yolo = run.export / "yolo"
            rows[f"{heat} labels"][str(seed)] = train_and_test(
                yolo / "data.yaml", test_yaml, work / f"{heat}-{seed}", args.epochs, seed
            )
        centred = centred_copy(exports["attention"], work / f"centred-export-{seed}")
        centred_yaml = data_yaml(
            work / f"centred-{seed}.yaml", centred / "images" / "train", centred / "images" / "val"
        )
        rows["centred boxes"][str(seed)] = train_and_test(
            centred_yaml, test_yaml, work / f"centred-{seed}", args.epochs, seed
        )
        print(seed, json.dumps({name: per[str(seed)] for name, per in rows.items()}))
    ceiling_yaml = data_yaml(
        work / "real.yaml", real_test / "images" / "train", real_test / "images" / "train"
    )
    rows["real, true boxes"] = {
        str(args.seeds[0]): train_and_test(
            ceiling_yaml, test_yaml, work / "real-train", args.epochs, args.seeds[0]
        )
    }
    summary = {
        name: {m: mean_std([r[m] for r in per.values()]) for m in ("mAP50", "mAP50-95")}
        for name, per in rows.items()
    }
    result = {
        "benchmark": "detect_digits",
        "command": "python benchmarks/labels_digits.py --seeds "
        + " ".join(map(str, args.seeds))
        + "; python benchmarks/detect_digits.py --seeds "
        + " ".join(map(str, args.seeds))
        + f" --epochs {args.epochs}",
        "setup": {
            "detector": f"YOLOv8n from yolov8n.yaml (no pretrained weights), imgsz 64, "
            f"{args.epochs} epochs, batch 32, CPU",
            "synthetic": "50 generated digits per class per recipe seed, boxes from "
            "cross-attention labels (heat attention or guidance), exported with synthset "
            "export --format yolo",
            "test": f"{len(split['test'])} held-out real digits (25 % split) at random places on "
            f"{CANVAS}x{CANVAS}, true box = the ink's box",
            "ceiling": f"{len(split['train'])} real train-split canvases with true boxes",
        },
        "summary": summary,
        "per_seed": rows,
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
