"""Fidelity and diversity of a synthetic set against real images, overall and per class.

Every image passes once through a pluggable feature extractor (see ``scoring/features.py``); FID,
KID, precision / recall, density / coverage and intra-class diversity are then computed from the
features (``fidelity_metrics.py``), and the CLIP score of each synthetic image against its
prompt with a local CLIP. The result goes to ``evaluate/fidelity.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from synthset.data.splits import Samples
from synthset.errors import SynthsetError
from synthset.evaluate.fidelity_metrics import METRIC_KEYS, compare, diversity
from synthset.evaluate.reference import reference_classifier
from synthset.evaluate.tensors import check_labels, infer_format, load_tensors
from synthset.evaluate.train import to_input
from synthset.recipe import EvaluateSpec
from synthset.scoring.features import (
    Extractor,
    inception_extractor,
    last_linear,
    penultimate,
    user_extractor,
)
from synthset.store.atomic import atomic_write_json

log = logging.getLogger(__name__)

DECODE_CHUNK = 2048  # images decoded at once


def subsample(samples: Samples, per_class: int, seed: int) -> Samples:
    """At most ``per_class`` samples of each label, picked by a seeded shuffle, in input order."""
    labels = np.array([lbl for _, lbl in samples])
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for lbl in np.unique(labels):
        idx = np.flatnonzero(labels == lbl)
        keep += rng.permutation(idx)[:per_class].tolist() if len(idx) > per_class else list(idx)
    return [samples[i] for i in sorted(keep)]


# ----------------------------------------------------------------------------- extractor


def classifier_extractor(
    model: nn.Module, name: str, image_size: int, channels: int, device: torch.device
) -> Extractor:
    """Penultimate features of a trained CAS classifier (inputs scaled like CAS: [-1, 1])."""
    model.eval().to(device)
    feats = penultimate(model, name)
    head = last_linear(model, name)
    return Extractor(name, image_size, channels, lambda x: feats(to_input(x)), device, head=head)


def real_classifier(
    spec: EvaluateSpec,
    real: dict[str, Samples],
    num_classes: int,
    size: int,
    channels: int,
    device: torch.device,
    cache_dir: Path,
    progress: bool = True,
    field: str = "evaluate.fidelity.extractor 'classifier'",
    stem: str = "fidelity_classifier",
) -> Extractor:
    """The CAS classifier trained on the real train split (selected on val) for
    ``fidelity.classifier_epochs``, as an extractor; its weights are cached in
    ``cache_dir/<stem>.safetensors`` (see ``evaluate/reference.py``); ``field`` names the
    recipe field in errors."""
    spec = spec.model_copy(update={"epochs": spec.fidelity.classifier_epochs or spec.epochs})
    model = reference_classifier(
        spec,
        real,
        num_classes,
        size,
        channels,
        device,
        cache_dir,
        progress,
        field=field,
        stem=stem,
    )
    return classifier_extractor(model, f"classifier:{spec.classifier}-real", size, channels, device)


def build_extractor(
    spec: EvaluateSpec,
    real: dict[str, Samples],
    num_classes: int,
    size: int,
    channels: int,
    device: torch.device,
    cache_dir: Path,
    progress: bool = True,
) -> Extractor:
    """The extractor ``spec.fidelity.extractor`` names (``auto``: inception when
    ``inception_weights`` is set, else the real-data classifier)."""
    fs = spec.fidelity
    choice = fs.extractor
    if choice == "auto":
        choice = "inception" if fs.inception_weights is not None else "classifier"
    if choice == "inception":
        return inception_extractor(fs.inception_weights, size, device)
    if choice == "classifier":
        return real_classifier(spec, real, num_classes, size, channels, device, cache_dir, progress)
    return user_extractor(choice, fs.weights, fs.extractor_image_size, device)


# ----------------------------------------------------------------------------- metrics


def _features(
    ext: Extractor, samples: Samples, what: str, n_cls: int, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of ``samples``, decoded in chunks so memory stays bounded."""
    feats, labels = [], []
    for i in range(0, len(samples), DECODE_CHUNK):
        data = load_tensors(samples[i : i + DECODE_CHUNK], ext.image_size, ext.channels, what)
        check_labels(data, n_cls, what)
        feats.append(ext(data.images, batch))
        labels.append(data.labels)
    return torch.cat(feats), torch.cat(labels)


def intra_class_diversity(features: torch.Tensor, labels: torch.Tensor, n_cls: int) -> float | None:
    """Mean over classes of the mean pairwise feature distance within the class."""
    values = [diversity(features[labels == c]) for c in range(n_cls)]
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _clip_scores(
    model: str,
    synthetic: Samples,
    prompts_by_path: dict[str, str] | None,
    class_names: list[str],
    device: torch.device,
    batch: int,
) -> dict[str, Any] | None:
    from synthset.scoring.clip_score import ClipScorer

    pairs = [
        (p, lbl, prompts_by_path[str(p)])
        for p, lbl in synthetic
        if prompts_by_path and str(p) in prompts_by_path
    ]
    if not pairs:
        log.warning("fidelity: no prompts for the synthetic images; CLIP score skipped")
        return None
    scorer = ClipScorer(model, device)
    scores = scorer.score_files([p for p, _, _ in pairs], [t for _, _, t in pairs], batch)
    labels = torch.tensor([lbl for _, lbl, _ in pairs])
    per_class = {
        name: float(scores[labels == c].mean()) if bool((labels == c).any()) else None
        for c, name in enumerate(class_names)
    }
    return {"model": model, "mean": float(scores.mean()), "n": len(pairs), "per_class": per_class}


Features = tuple[torch.Tensor, torch.Tensor]  # (features N×d, labels N)


def labelled_right(ext: Extractor, features: Features, n_cls: int) -> torch.Tensor | None:
    """Whether the extractor's classifier (trained on real images) gives each image its own
    label: per image, for the *label fidelity* (GAN-test, Shmelkov et al. 2018); None when the
    extractor is not a classifier of these classes."""
    head = ext.head
    if head is None or head.out_features != n_cls:
        return None
    feats, labels = features
    weight = head.weight.detach().cpu().double()
    bias = head.bias.detach().cpu().double() if head.bias is not None else 0.0
    return (feats @ weight.T + bias).argmax(1) == labels


def share(hits: torch.Tensor) -> float | None:
    """The fraction of True in ``hits`` (None when empty)."""
    return float(hits.double().mean()) if len(hits) else None


def add_label_fidelity(
    ext: Extractor,
    images: Features,
    class_names: list[str],
    overall: dict[str, Any],
    per_class: dict[str, dict[str, Any]] | None = None,
) -> None:
    """``label_fidelity`` of ``images`` overall (and per class into ``per_class``, keyed by
    class name), when the extractor is the real classifier."""
    hits = labelled_right(ext, images, len(class_names))
    if hits is None:
        return
    overall["label_fidelity"] = share(hits)
    for c, name in enumerate(class_names if per_class is not None else []):
        per_class[name]["label_fidelity"] = share(hits[images[1] == c])


def measure(
    real: Features,
    fake: Features,
    class_names: list[str],
    args: tuple[int, int, int, int],
    per_class: bool = True,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Every metric overall and (optionally) per class; ``args`` = (k, kid_subset_size,
    kid_subsets, seed). Overall diversity is the mean of the per-class (intra-class) values."""
    (real_f, real_y), (fake_f, fake_y) = real, fake
    n_cls = len(class_names)
    overall = compare(real_f, fake_f, *args)
    overall["diversity_real"] = intra_class_diversity(real_f, real_y, n_cls)
    overall["diversity_synthetic"] = intra_class_diversity(fake_f, fake_y, n_cls)
    classes: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(class_names if per_class else []):
        r, f = real_f[real_y == c], fake_f[fake_y == c]
        if len(r) == 0 or len(f) == 0:
            log.warning(
                "fidelity: class %r has %d real / %d synthetic images", name, len(r), len(f)
            )
            classes[name] = dict.fromkeys(METRIC_KEYS)
        else:
            classes[name] = compare(r, f, *args, f"class {name!r}")
    return overall, classes


def run_fidelity(
    spec: EvaluateSpec,
    real: dict[str, Samples],
    synthetic: Samples,
    prompts_by_path: dict[str, str] | None,
    class_names: list[str],
    out_dir: Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Compare ``synthetic`` with ``real[spec.fidelity.real_split]``; write
    ``out_dir/fidelity.json`` and return it. ``prompts_by_path`` maps ``str(path)`` of a
    synthetic image to its prompt (for the CLIP score)."""
    from synthset.devices import cpu_threads, resolve_device

    fs = spec.fidelity
    out_dir = Path(out_dir)
    n_cls = len(class_names)
    split = fs.real_split
    if not real.get(split):
        raise SynthsetError(
            f"fidelity: the real {split} split is empty (evaluate.fidelity.real_split); add images"
        )
    if not synthetic:
        raise SynthsetError("fidelity: there are no synthetic images to compare with real ones")
    seed = spec.seeds[0]
    reference = subsample(real[split], fs.max_images_per_class, seed)
    fake = subsample(synthetic, fs.max_images_per_class, seed)
    size, channels = infer_format(real.get("train") or real[split], f"real {split}")
    size, channels = spec.image_size or size, spec.channels or channels
    device = resolve_device(fs.device)
    start = time.perf_counter()
    ext = build_extractor(spec, real, n_cls, size, channels, device, out_dir, progress)
    with cpu_threads(device, ext.work_size or ext.image_size):
        real_f, real_y = _features(ext, reference, f"fidelity: real {split}", n_cls, fs.batch_size)
        fake_f, fake_y = _features(ext, fake, "fidelity: synthetic", n_cls, fs.batch_size)
        val_f = val_y = None
        if split == "train" and real.get("val"):  # held-out real images: the yardstick
            val = subsample(real["val"], fs.max_images_per_class, seed)
            val_f, val_y = _features(ext, val, "fidelity: real val", n_cls, fs.batch_size)
    args = (fs.k, fs.kid_subset_size, fs.kid_subsets, seed)
    overall, per_class = measure((real_f, real_y), (fake_f, fake_y), class_names, args)
    add_label_fidelity(ext, (fake_f, fake_y), class_names, overall, per_class)
    baseline = None
    if val_f is not None:
        base, _ = measure((real_f, real_y), (val_f, val_y), class_names, args, per_class=False)
        add_label_fidelity(ext, (val_f, val_y), class_names, base)
        baseline = {"real_split": "val", "n": len(val_f), **base}
    clip = None
    if fs.clip_model is not None:
        clip = _clip_scores(
            fs.clip_model, fake, prompts_by_path, class_names, device, fs.batch_size
        )
    result = {
        "extractor": ext.name,
        "feature_dim": int(real_f.shape[1]),
        "n_real": len(reference),
        "n_synthetic": len(fake),
        "real_split": split,
        "overall": overall,
        "per_class": per_class,
        "real_baseline": baseline,
        "clip_score": clip,
        "config": {
            "k": fs.k,
            "kid_subset_size": fs.kid_subset_size,
            "kid_subsets": fs.kid_subsets,
            "max_images_per_class": fs.max_images_per_class,
            "image_size": ext.image_size,
            "channels": ext.channels,
            "device": str(device),
            "seconds": round(time.perf_counter() - start, 3),
        },
    }
    atomic_write_json(out_dir / "fidelity.json", result)
    return result


def metric_label(metric: str, extractor: str) -> str:
    """A display name that says which extractor a metric used, e.g. ``FID (inception-v3-fid)``."""
    names = {
        "fid": "FID",
        "kid_mean": "KID",
        "kid_std": "KID std",
        "precision": "precision",
        "recall": "recall",
        "density": "density",
        "coverage": "coverage",
        "diversity_real": "diversity real",
        "diversity_synthetic": "diversity synthetic",
    }
    return f"{names.get(metric, metric)} ({extractor})"
