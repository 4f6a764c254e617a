"""Pretrained backbones: the linear probe and WiSE-FT (``evaluate.protocol``).

The linear probe freezes ``evaluate.classifier`` loaded from ``classifier_weights``, takes the
input of its last linear layer as features (extracted once per image set, in eval mode), and fits
a multinomial logistic regression (scikit-learn, L-BFGS) on standardised train features for
every ``probe_c``; the C with the best val accuracy (then the lower val loss) is tested once.

WiSE-FT (Wortsman et al., 2022) interpolates the fine-tuned weights with the pretrained ones,
``(1 - a) θ_pretrained + a θ_finetuned``; the head is new for the new classes, so it stays
fine-tuned. The ``a`` with the best val accuracy is tested once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from synthset.evaluate.tensors import TensorSet
from synthset.evaluate.train import EVAL_BATCH, accuracy_and_loss, head, to_input


@dataclass
class Fitted:
    """A model selected on val: its test-time scores and how it was chosen."""

    scores: Callable[[TensorSet], torch.Tensor]  # N×K logits (or log-probabilities)
    best_val_accuracy: float
    best_epoch: int
    val_history: list[float]
    val_loss_history: list[float]
    extra: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def frozen_features(model: nn.Module, data: TensorSet, device: torch.device) -> np.ndarray:
    """The input of ``model``'s last linear layer for every image (float64, eval mode)."""
    from synthset.scoring.features import penultimate

    model.eval().to(device)
    features = penultimate(model, "evaluate.protocol linear_probe")
    parts = [
        features(to_input(data.images[i : i + EVAL_BATCH].to(device))).flatten(1).double().cpu()
        for i in range(0, len(data), EVAL_BATCH)
    ]
    return torch.cat(parts).numpy()


def fit_linear_probe(
    model: nn.Module,
    train: TensorSet,
    val: TensorSet,
    cs: list[float],
    seed: int,
    device: torch.device,
) -> Fitted:
    """Logistic regressions on ``model``'s frozen features, one per C; the best on val wins."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    x_train = frozen_features(model, train, device)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train = (x_train - mean) / std
    x_val = (frozen_features(model, val, device) - mean) / std
    y_train, y_val = train.labels.numpy(), val.labels.numpy()
    classes = np.arange(int(max(y_train.max(), y_val.max())) + 1)
    accs, losses, fits = [], [], []
    for c in cs:
        fit = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x_train, y_train)
        proba = _full_proba(fit, x_val, len(classes))
        accs.append(float((proba.argmax(1) == y_val).mean()))
        losses.append(float(log_loss(y_val, proba, labels=classes)))
        fits.append(fit)
    best = max(range(len(cs)), key=lambda i: (accs[i], -losses[i]))

    def scores(data: TensorSet) -> torch.Tensor:
        x = (frozen_features(model, data, device) - mean) / std
        return torch.from_numpy(np.log(_full_proba(fits[best], x, len(classes)) + 1e-12))

    return Fitted(scores, accs[best], best, accs, losses, {"probe_c": cs[best]})


def _full_proba(fit: Any, x: np.ndarray, num_classes: int) -> np.ndarray:
    """Class probabilities over every class (a class absent from train gets 0)."""
    proba = np.zeros((len(x), num_classes))
    proba[:, fit.classes_] = fit.predict_proba(x)
    return proba


@torch.no_grad()
def wise_ft(
    model: nn.Module,
    pretrained: dict[str, torch.Tensor],
    tuned: dict[str, torch.Tensor],
    alphas: list[float],
    val: TensorSet,
    device: torch.device,
) -> tuple[float, dict[str, float], float]:
    """Load into ``model`` the interpolation with the best val accuracy (then loss; a tie goes
    to the larger ``a``); returns that ``a``, val accuracy per ``a`` and the best accuracy."""
    last = head(model)
    head_keys = {k for k, m in model.named_modules() if m is last}
    results: dict[float, tuple[float, float]] = {}
    for a in sorted({*alphas, 1.0}):
        model.load_state_dict(_interpolate(pretrained, tuned, a, head_keys))
        acc, loss = accuracy_and_loss(model, val, device)
        results[a] = (acc, -loss)
    best = max(results, key=lambda a: (results[a], a))
    model.load_state_dict(_interpolate(pretrained, tuned, best, head_keys))
    return best, {f"{a:g}": acc for a, (acc, _) in results.items()}, results[best][0]


def _interpolate(
    pretrained: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], a: float, keep: set[str]
) -> dict[str, torch.Tensor]:
    """``(1 - a) pretrained + a tuned`` for every float tensor outside the modules ``keep``."""
    out = {}
    for k, v in tuned.items():
        module = k.rsplit(".", 1)[0]
        if module in keep or not v.is_floating_point():
            out[k] = v
        else:
            out[k] = (1 - a) * pretrained[k].to(v) + a * v
    return out
