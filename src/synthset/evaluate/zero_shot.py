"""CLIP's zero-shot classifier as the reference row of a CAS study (``evaluate.zero_shot_clip``):
each real test image gets the class whose prompt embedding (the mean over the templates) is
closest to its image embedding. Nothing is trained; no image but the test (and out-of-domain)
split is read."""

from __future__ import annotations

from typing import Any

import torch

from synthset.data.splits import Samples
from synthset.evaluate.train import test_metrics
from synthset.recipe import EvaluateSpec
from synthset.scoring.clip_score import ClipScorer, open_rgb

BATCH = 64


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
