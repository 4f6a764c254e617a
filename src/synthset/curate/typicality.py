"""``typicality``: minus the relative Mahalanobis distance (Ren et al., 2021) of the image's
features to its own class, in the reference classifier's penultimate space fitted on the real
train split. ``RMD_k(x) = MD_k(x) - MD_0(x)``: the distance to class k's Gaussian (shared
covariance) minus the distance to one Gaussian over all real images, so what is far from every
real image scores low, and so does what sits closer to another class than to its own."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from synthset.curate.base import ScoringContext
from synthset.evaluate.tensors import TensorSet
from synthset.evaluate.train import EVAL_BATCH, to_input
from synthset.recipe import CurateSpec

RIDGE = 1e-3  # × the mean variance, added to the covariances' diagonals


class Typicality:
    name = "typicality"
    uses_reference = True

    def __init__(self, spec: CurateSpec) -> None:
        self.spec = spec

    def settings(self) -> dict[str, Any]:
        return {"classifier": self.spec.classifier, "epochs": self.spec.epochs, "ridge": RIDGE}

    def score(self, ctx: ScoringContext) -> np.ndarray:
        from synthset.scoring.features import penultimate

        features = penultimate(ctx.reference, "curate typicality")
        real = ctx.real_tensors("train")
        real_f = _features(features, real, ctx.device)
        syn_f = _features(features, ctx.synthetic_tensors, ctx.device)
        n_cls = len(ctx.class_names)
        rmd = relative_mahalanobis(real_f, real.labels, syn_f, ctx.synthetic_tensors.labels, n_cls)
        return (-rmd).numpy()


@torch.no_grad()
def _features(fn: Any, data: TensorSet, device: torch.device) -> torch.Tensor:
    parts = [
        fn(to_input(data.images[i : i + EVAL_BATCH].to(device))).flatten(1).double().cpu()
        for i in range(0, len(data), EVAL_BATCH)
    ]
    return torch.cat(parts)


def _precision(centred: torch.Tensor) -> torch.Tensor:
    cov = centred.T @ centred / max(1, len(centred) - 1)
    ridge = RIDGE * float(cov.diagonal().mean().clamp(min=1e-12))
    return torch.linalg.inv(cov + ridge * torch.eye(len(cov), dtype=cov.dtype))


def _mahalanobis(x: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    d = x - mean
    return ((d @ precision) * d).sum(1)


def relative_mahalanobis(
    real: torch.Tensor,
    real_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    num_classes: int,
) -> torch.Tensor:
    """RMD of each query to its own label's class (float64). Classes without real images get
    the background distance only (their class term is 0)."""
    means = torch.zeros(num_classes, real.shape[1], dtype=real.dtype)
    present = torch.zeros(num_classes, dtype=torch.bool)
    for k in range(num_classes):
        rows = real[real_labels == k]
        if len(rows):
            means[k], present[k] = rows.mean(0), True
    class_precision = _precision(real - means[real_labels])
    background_mean = real.mean(0)
    background = _mahalanobis(queries, background_mean, _precision(real - background_mean))
    own = _mahalanobis(queries, means[query_labels], class_precision)
    own = torch.where(present[query_labels], own, background)
    return own - background
