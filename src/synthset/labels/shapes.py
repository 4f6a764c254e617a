"""From a per-pixel score map to objects: threshold (fixed or Otsu), connected regions (largest
first, small ones dropped), and a mask's box and simplified polygon."""

from __future__ import annotations

import numpy as np


def scale_unit(heat: np.ndarray) -> np.ndarray:
    """``heat`` scaled to [0, 1] by its own range (a flat map becomes zeros)."""
    heat = heat.astype(np.float64)
    low, high = float(heat.min()), float(heat.max())
    return (heat - low) / (high - low) if high > low else np.zeros_like(heat)


def threshold_map(unit: np.ndarray, threshold: float | str) -> np.ndarray:
    """Pixels of a [0, 1] map above ``threshold`` (a number, or 'otsu' for Otsu's method)."""
    if isinstance(threshold, str):
        from skimage.filters import threshold_otsu

        if np.ptp(unit) == 0:
            return np.zeros(unit.shape, dtype=bool)
        return unit > threshold_otsu(unit)
    return unit > threshold


def regions(mask: np.ndarray, max_regions: int, min_area: float) -> list[np.ndarray]:
    """The ``max_regions`` largest 8-connected regions of ``mask`` covering at least
    ``min_area`` of the image (at least one pixel), largest first, as boolean masks."""
    from scipy import ndimage

    labeled, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
    if n == 0:
        return []
    areas = np.bincount(labeled.ravel())[1:]
    order = np.argsort(-areas, kind="stable")[:max_regions]
    floor = max(min_area * mask.size, 1)
    return [labeled == idx + 1 for idx in order if areas[idx] >= floor]


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The tight box around a non-empty mask: (x0, y0, x1, y1), x1 and y1 exclusive."""
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def polygon_of(mask: np.ndarray, tolerance: float) -> list[tuple[float, float]]:
    """The outer contour of one region along its pixels' edges (corners at integer
    coordinates), simplified by ``tolerance`` pixels (Douglas-Peucker), as (x, y) points."""
    from skimage.measure import approximate_polygon, find_contours

    # on the 2x-upsampled mask, the 0.5 contour runs along pixel edges except for corners cut
    # by a quarter pixel, which rounding puts back on the pixel corner
    padded = np.pad(np.kron(mask, np.ones((2, 2))).astype(float), 1)
    outer = max(find_contours(padded, 0.5), key=len)
    corners = np.round((outer - 0.5) / 2)[:, ::-1]  # (x, y) on the pixel-corner grid
    keep = np.ones(len(corners), dtype=bool)
    keep[1:] = np.any(corners[1:] != corners[:-1], axis=1)
    corners = corners[keep]
    if tolerance > 0 and len(corners) > 3:
        corners = approximate_polygon(corners, tolerance=tolerance)
    points = [(float(x), float(y)) for x, y in corners]
    if len(points) > 1 and points[0] == points[-1]:
        points = points[:-1]
    return points


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
