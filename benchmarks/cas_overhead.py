"""Time of the CAS harness against a plain PyTorch training loop, measured in one run.

Both train the same classifier (CIFAR ResNet-20 by default) with the same optimizer, cosine
schedule, batch size, epochs and augmentation on the same 32×32 10-class PNG ImageFolder, score the
validation split after every epoch and the test split once. The plain loop is what a researcher
writes by hand: ``torchvision.datasets.ImageFolder`` + ``DataLoader`` (decoding PNGs every epoch).
The harness decodes once into uint8 tensors. Rounds alternate the order; the median is reported.
Target: harness time ≤ 1.25 × plain loop time.

    python benchmarks/cas_overhead.py [--train 1000] [--epochs 3] [--rounds 2]

Writes ``benchmarks/results/cas_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"
NUM_CLASSES, SIZE = 10, 32


def make_split(root: Path, per_class: int, seed: int) -> list[tuple[Path, int]]:
    """``root/<class>/<k>.png``: class-coloured blobs of class-dependent width, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    samples = []
    for c in range(NUM_CLASSES):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array([(c * 37) % 256, (c * 91) % 256, (c * 53) % 256], dtype=float)
        for k in range(per_class):
            cy, cx = rng.integers(8, 24, 2)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (3 + c % 4) ** 2))
            img = blob[..., None] * colour + rng.normal(0, 25, (SIZE, SIZE, 3))
            path = folder / f"{k}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
            samples.append((path, c))
    return samples


def plain_loop(root: Path, spec, seed: int) -> float:
    """The hand-written baseline; returns its test accuracy."""
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from synthset.evaluate.classifiers import build_classifier

    torch.manual_seed(seed)
    norm = transforms.Normalize([0.5] * 3, [0.5] * 3)
    train_tf = transforms.Compose(
        [transforms.RandomCrop(SIZE, padding=4), transforms.ToTensor(), norm]
    )
    eval_tf = transforms.Compose([transforms.ToTensor(), norm])
    train = datasets.ImageFolder(root / "train", train_tf)
    val = datasets.ImageFolder(root / "val", eval_tf)
    test = datasets.ImageFolder(root / "test", eval_tf)
    loader = DataLoader(train, batch_size=spec.batch_size, shuffle=True, drop_last=False)
    model = build_classifier(spec.classifier, NUM_CLASSES, 3, SIZE)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, spec.epochs * len(loader))

    def evaluate(ds) -> float:
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in DataLoader(ds, batch_size=1024):
                correct += int((model(x).argmax(1) == y).sum())
        return correct / len(ds)

    best, best_state = -1.0, None
    for _ in range(spec.epochs):
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(val)
        if acc > best:
            best, best_state = acc, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return evaluate(test)


def harness(root: Path, splits: dict, spec, out: Path) -> float:
    from synthset.evaluate.cas import run_cas

    names = [f"class{c}" for c in range(NUM_CLASSES)]
    result = run_cas(spec, splits, [], names, out, progress=False)
    return result["train_sets"]["real"]["summary"]["test_accuracy_mean"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000, help="training images in all")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--classifier", default="cifar_resnet20")
    args = parser.parse_args()

    from synthset.recipe import EvaluateSpec

    spec = EvaluateSpec(
        train_sets=["real"],
        classifier=args.classifier,
        epochs=args.epochs,
        batch_size=128,
        seeds=[0],
        device="cpu",
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        splits = {
            "train": make_split(root / "train", args.train // NUM_CLASSES, 0),
            "val": make_split(root / "val", 20, 1),
            "test": make_split(root / "test", 20, 2),
        }
        times: dict[str, list[float]] = {"harness": [], "plain": []}
        accs: dict[str, list[float]] = {"harness": [], "plain": []}
        for r in range(args.rounds):
            order = ["harness", "plain"] if r % 2 == 0 else ["plain", "harness"]
            for name in order:
                start = time.perf_counter()
                if name == "harness":
                    acc = harness(root, splits, spec, root / f"eval{r}")
                else:
                    acc = plain_loop(root, spec, 0)
                times[name].append(time.perf_counter() - start)
                accs[name].append(acc)
                print(f"round {r} {name}: {times[name][-1]:.1f} s, test acc {acc:.3f}", flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["harness"] / med["plain"]
    result = {
        "benchmark": "cas_overhead",
        "classifier": args.classifier,
        "train_images": args.train,
        "image_size": SIZE,
        "classes": NUM_CLASSES,
        "epochs": args.epochs,
        "rounds": args.rounds,
        "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "median_seconds": {k: round(v, 2) for k, v in med.items()},
        "test_accuracy": {k: [round(x, 4) for x in v] for k, v in accs.items()},
        "harness_over_plain": round(ratio, 3),
        "target": "harness <= 1.25 x plain",
        "target_met": ratio <= 1.25,
        "torch_threads": torch.get_num_threads(),
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "cas_overhead.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
