"""The reference classifier: the CAS classifier trained on the real train split and selected on
val, cached with a fingerprint of everything it depends on. Fidelity takes its penultimate
features; curation takes its label probabilities and features too."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from torch import nn

from synthset.data.splits import Samples
from synthset.errors import SynthsetError
from synthset.evaluate.classifiers import build_classifier
from synthset.evaluate.tensors import check_labels, load_tensors
from synthset.recipe import EvaluateSpec
from synthset.recipe.evaluate import NOT_REFERENCE_TRAINING
from synthset.store.atomic import atomic_write_bytes, atomic_write_json


def _fingerprint(spec: EvaluateSpec, size: int, channels: int, n_cls: int, *sets: Samples) -> str:
    data = {
        "spec": spec.model_dump(mode="json", exclude=set(NOT_REFERENCE_TRAINING)),
        "size": size,
        "channels": channels,
        "classes": n_cls,
        "seed": spec.seeds[0],
        "samples": [[[str(p), int(lbl)] for p, lbl in s] for s in sets],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def reference_classifier(
    spec: EvaluateSpec,
    real: dict[str, Samples],
    num_classes: int,
    size: int,
    channels: int,
    device: torch.device,
    cache_dir: Path,
    progress: bool = True,
    field: str = "reference classifier",
    stem: str = "reference_classifier",
) -> nn.Module:
    """``spec.classifier`` trained on ``real['train']`` (best epoch on ``real['val']``), in eval
    mode on ``device``. Its weights are kept as ``cache_dir/<stem>.safetensors`` with a
    ``<stem>.json`` fingerprint, so a rerun loads them instead of training again. ``field``
    names the recipe field in the one-line error for an empty split."""
    from safetensors.torch import load_file, save

    from synthset.devices import cpu_threads
    from synthset.evaluate.train import train_classifier

    train, val = real.get("train") or [], real.get("val") or []
    if not train or not val:
        raise SynthsetError(
            f"{field} trains a classifier on the real train split and selects it on val: both "
            "must hold images (raise real.val_fraction)"
        )
    spec = spec.model_copy(update={"protocol": "scratch", "backbone_lr_scale": 1.0})
    seed = spec.seeds[0]
    fp = _fingerprint(spec, size, channels, num_classes, train, val)
    weights, meta = cache_dir / f"{stem}.safetensors", cache_dir / f"{stem}.json"
    torch.manual_seed(seed)
    model = build_classifier(spec.classifier, num_classes, channels, size)
    cached = meta.exists() and weights.exists() and json.loads(meta.read_text()).get("fp") == fp
    if cached:
        model.load_state_dict(load_file(str(weights)))
        return model.eval().to(device)
    what = stem.replace("_", " ")
    train_set = load_tensors(train, size, channels, f"{what}: real train")
    val_set = load_tensors(val, size, channels, f"{what}: real val")
    check_labels(train_set, num_classes, f"{what}: real train")
    start = time.perf_counter()
    with cpu_threads(device, size), torch.enable_grad():  # callers may score under no_grad
        best = train_classifier(
            model,
            train_set,
            val_set,
            spec=spec,
            seed=seed,
            device=device,
            progress=progress,
            desc=what,
        )
    model.load_state_dict(best.state)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(weights, save(state))
    atomic_write_json(
        meta,
        {
            "fp": fp,
            "classifier": spec.classifier,
            "best_val_accuracy": best.best_val_accuracy,
            "best_epoch": best.best_epoch,
            "seconds": round(time.perf_counter() - start, 3),
        },
    )
    return model.eval().to(device)
