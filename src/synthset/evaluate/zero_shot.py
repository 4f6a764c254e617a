"""CLIP's zero-shot classifier as the reference row of a CAS study (``evaluate.zero_shot_clip``):
each real test image gets the class whose prompt embedding (the mean over the templates) is
closest to its image embedding. Nothing is trained; no image but the test (and out-of-domain)
split is read. The result is kept as ``zero_shot.json`` beside ``cas.json`` with a fingerprint of
the model, templates, class names and test images, so a rerun of the study does not score
again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from synthset.data.splits import Samples
from synthset.evaluate.train import test_metrics
from synthset.recipe import EvaluateSpec
from synthset.scoring.clip_score import ClipScorer, open_rgb
from synthset.store.atomic import atomic_write_json
from synthset.store.digests import inputs_digest

BATCH = 64
CACHE_FILE = "zero_shot.json"


def cached_zero_shot(
    spec: EvaluateSpec,
    test: Samples,
    class_names: list[str],
    device: torch.device,
    out_dir: Path,
    ood: Samples | None = None,
) -> dict[str, Any]:
    """:func:`zero_shot`, read from ``out_dir/zero_shot.json`` when nothing it depends on changed
    (a local model folder by its listing, the test images by path and label)."""
    assert spec.zero_shot_clip is not None
    model = Path(spec.zero_shot_clip)
    inputs = {
        "model": spec.zero_shot_clip,
        "model_files": inputs_digest([model]) if model.exists() else None,
        "templates": spec.zero_shot_templates,
        "classes": class_names,
        "samples": [[[str(p), int(lbl)] for p, lbl in s or []] for s in (test, ood)],
    }
    fingerprint = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(out_dir) / CACHE_FILE
    try:
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") == fingerprint:
            return saved["result"]
    except (OSError, json.JSONDecodeError, AttributeError, KeyError):
        pass
    result = zero_shot(spec, test, class_names, device, ood)
    atomic_write_json(path, {"fingerprint": fingerprint, "result": result})
    return result


def zero_shot(
    spec: EvaluateSpec,
    test: Samples,
    class_names: list[str],
    device: torch.device,
    ood: Samples | None = None,
) -> dict[str, Any]:
    """Test metrics of the zero-shot classifier (and its out-of-domain accuracy)."""
    assert spec.zero_shot_clip is not None
    clip = ClipScorer(spec.zero_shot_clip, device, field="evaluate.zero_shot_clip")
    text = clip.class_embeddings(class_names, spec.zero_shot_templates)

    def scores(samples: Samples) -> torch.Tensor:
        parts = [
            clip.image_embeddings([open_rgb(p) for p, _ in samples[i : i + BATCH]]) @ text.T
            for i in range(0, len(samples), BATCH)
        ]
        return torch.cat(parts)

    def metrics(samples: Samples) -> dict[str, Any]:
        s = scores(samples)
        labels = torch.tensor([int(lbl) for _, lbl in samples])
        return test_metrics(s.argmax(1), labels, len(class_names), s)

    result = {"clip_model": spec.zero_shot_clip, "templates": spec.zero_shot_templates}
    result |= metrics(test)
    if ood:
        result["ood_test_accuracy"] = metrics(ood)["test_accuracy"]
    return result
