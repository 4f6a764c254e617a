"""``label_agreement``: the probability of the image's own label under the reference classifier
(trained on the real train split, selected on val). A generated "7" that looks like a "1" to a
classifier of real digits scores low. By default (``curate.batchnorm: synthetic``) a copy of the
reference first re-estimates its batch-norm statistics on the synthetic set (AdaBN, Li et al.
2016): generated images often differ from real ones globally (contrast, stroke weight), which a
classifier with real statistics reads as another class."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from synthset.curate.base import ScoringContext
from synthset.evaluate.train import EVAL_BATCH, recalibrate_batchnorm, to_input
from synthset.recipe import CurateSpec


class LabelAgreement:
    name = "label_agreement"
    uses_reference = True

    def __init__(self, spec: CurateSpec) -> None:
        self.spec = spec

    def settings(self) -> dict[str, Any]:
        return {
            "classifier": self.spec.classifier,
            "epochs": self.spec.epochs,
            "batchnorm": self.spec.batchnorm,
        }

    @torch.no_grad()
    def score(self, ctx: ScoringContext) -> np.ndarray:
        from synthset.evaluate.classifiers import logits

        model, data = ctx.reference, ctx.synthetic_tensors
        if self.spec.batchnorm == "synthetic":
            model = copy.deepcopy(model)
            recalibrate_batchnorm(model, data, ctx.device)
        model.eval()
        out = []
        for i in range(0, len(data), EVAL_BATCH):
            x = to_input(data.images[i : i + EVAL_BATCH].to(ctx.device))
            prob = logits(model(x)).float().softmax(1).cpu()
            out.append(prob.gather(1, data.labels[i : i + EVAL_BATCH, None])[:, 0])
        return torch.cat(out).double().numpy()
