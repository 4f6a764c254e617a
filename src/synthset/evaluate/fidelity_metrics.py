"""Distribution metrics between two sets of image features (rows of a float tensor).

FID and KID come from torchmetrics, fed with precomputed features (an identity "network"), so
every image passes through the feature extractor once however many subsets are compared.
Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020) are
k-nearest-neighbour tests in feature space; diversity is the mean pairwise feature distance.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

METRIC_KEYS = (
    "fid",
    "kid_mean",
    "kid_std",
    "precision",
    "recall",
    "density",
    "coverage",
    "diversity_real",
    "diversity_synthetic",
)


class _Precomputed(nn.Module):
    """Identity "feature extractor" for torchmetrics: its inputs already are features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def fid(real: torch.Tensor, fake: torch.Tensor) -> float | None:
    """Fréchet distance between Gaussians fitted to the two feature sets (None if < 2 each).

    With fewer samples than feature dimensions (per-class FID on Inception features) the
    covariances have low rank and :func:`fid_low_rank` gives the same value much faster than
    torchmetrics' ``d×d`` eigen-decomposition (4 s per call at d=2048 on a CPU core)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        return None
    if min(len(real), len(fake)) < real.shape[1]:
        return _finite(max(0.0, fid_low_rank(real, fake)))
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    # eigenvalues of a product of PSD matrices may come out a hair below zero
    return _finite(max(0.0, float(metric.compute())))


def fid_low_rank(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID through the samples: with ``Σ1 = A Aᵀ`` and ``Σ2 = B Bᵀ`` (A, B the centred features
    over sqrt(n - 1), ``d×n``), the non-zero eigenvalues of ``Σ1 Σ2`` are those of
    ``(AᵀB)(AᵀB)ᵀ``, so ``tr sqrt(Σ1 Σ2)`` is the nuclear norm of the ``n1×n2`` matrix ``AᵀB``."""
    a = real.double() - real.double().mean(0)
    b = fake.double() - fake.double().mean(0)
    a, b = a / math.sqrt(len(a) - 1), b / math.sqrt(len(b) - 1)
    mean_term = (real.double().mean(0) - fake.double().mean(0)).square().sum()
    cross = torch.linalg.svdvals(a @ b.T).sum()
    return float(mean_term + a.square().sum() + b.square().sum() - 2 * cross)


def kid(
    real: torch.Tensor, fake: torch.Tensor, subset_size: int, subsets: int, seed: int
) -> tuple[float | None, float | None]:
    """Kernel Inception Distance (polynomial-kernel MMD², mean and std over random subsets).

    The subset size shrinks to the smaller set when a set is smaller (the estimator stays
    unbiased, only noisier); with fewer than 2 images in a set the result is None."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(real), len(fake))
    if size < 2:
        return None, None
    with warnings.catch_warnings():  # "will save all extracted features": they are small here
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(
            feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size
        )
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # torchmetrics draws the subsets from the global generator
        mean, std = metric.compute()
    return _finite(float(mean)), _finite(float(std))


def _kth_neighbour_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of ``x`` to its k-th nearest other row."""
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: the row itself is at distance 0


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict[str, float | None]:
    """Precision, recall, density and coverage with k-NN balls (None when a set has <= k rows).

    precision: share of fake samples inside some real sample's k-NN ball;
    recall: share of real samples inside some fake sample's k-NN ball;
    density: mean number of real balls holding a fake sample, divided by k;
    coverage: share of real samples whose ball holds at least one fake sample."""
    empty: dict[str, float | None] = dict.fromkeys(("precision", "recall", "density", "coverage"))
    if len(real) <= k or len(fake) <= k:
        return empty
    real, fake = real.double(), fake.double()
    r_real = _kth_neighbour_radii(real, k)
    r_fake = _kth_neighbour_radii(fake, k)
    d = torch.cdist(real, fake)  # real × fake
    inside_real = d <= r_real[:, None]  # fake j inside real i's ball
    inside_fake = d <= r_fake[None, :]  # real i inside fake j's ball
    return {
        "precision": float(inside_real.any(0).double().mean()),
        "recall": float(inside_fake.any(1).double().mean()),
        "density": float(inside_real.sum(0).double().mean() / k),
        "coverage": float((d.min(1).values <= r_real).double().mean()),
    }


def diversity(x: torch.Tensor) -> float | None:
    """Mean Euclidean distance between distinct rows of ``x`` (None with fewer than 2 rows)."""
    n = len(x)
    if n < 2:
        return None
    d = torch.cdist(x.double(), x.double())
    return float(d.sum() / (n * (n - 1)))


def compare(
    real: torch.Tensor,
    fake: torch.Tensor,
    k: int,
    kid_subset_size: int,
    kid_subsets: int,
    seed: int,
    what: str = "",
) -> dict[str, Any]:
    """Every metric of :data:`METRIC_KEYS` for one real / synthetic pair (None = too small)."""
    if min(len(real), len(fake)) < kid_subset_size:
        log.info(
            "fidelity %s: KID subsets of %d images (fewer than kid_subset_size=%d available)",
            what or "overall",
            min(len(real), len(fake)),
            kid_subset_size,
        )
    if min(len(real), len(fake)) <= k:
        log.warning(
            "fidelity %s: %d real / %d synthetic images are too few for k=%d nearest neighbours; "
            "precision/recall/density/coverage are null",
            what or "overall",
            len(real),
            len(fake),
            k,
        )
    kid_mean, kid_std = kid(real, fake, kid_subset_size, kid_subsets, seed)
    return {
        "fid": fid(real, fake),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        **prdc(real, fake, k),
        "diversity_real": diversity(real),
        "diversity_synthetic": diversity(fake),
    }
