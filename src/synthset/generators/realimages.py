"""Real-image inputs of the img2img and inpaint modes: loading, sizing and object masks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from synthset.data.images import open_image
from synthset.errors import SynthsetError
from synthset.plan import WorkItem, resolve_item_path


def load_real_image(item: WorkItem, root: Path | None, mode: str = "RGB") -> Image.Image:
    """The item's real image (``params['image']``) in ``mode`` (``L`` or ``RGB``), read as every
    stage reads images; a one-line error if it is missing or unreadable."""
    path = resolve_item_path(str(item.params.get("image", "")), root)
    if not path.is_file():
        raise SynthsetError(
            f"real image {path} (item {item.item_id}) is missing; re-run 'synthset data' or "
            "restore the real-image folder"
        )
    return open_image(path, mode, f"real image of item {item.item_id}")


def work_size(image: Image.Image, width: int | None, height: int | None) -> tuple[int, int]:
    """(width, height) to generate at: the recipe's size, else the image's, rounded down to a
    multiple of 8 (what the VAE needs)."""
    w = width or max(8, image.width // 8 * 8)
    h = height or max(8, image.height // 8 * 8)
    return w, h


def box_mask(size: tuple[int, int], box: tuple[float, float, float, float]) -> Image.Image:
    """White (object) inside the fractional box ``[x0, y0, x1, y1]``, black elsewhere."""
    w, h = size
    x0, y0, x1, y1 = box
    arr = np.zeros((h, w), dtype=np.uint8)
    arr[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)] = 255
    return Image.fromarray(arr, mode="L")


def saliency_mask(image: Image.Image) -> Image.Image:
    """A simple object mask: pixels whose colour is far from the border's median colour.

    Distance ``d`` to the median of the 1-pixel border, thresholded at
    ``max(24, 0.25 * max(d))`` (on 0..255 channels): works for objects on a plain background
    (product shots, digits, most datasets' centred objects); give a mask folder otherwise.
    """
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    d = np.linalg.norm(arr - np.median(border, axis=0), axis=-1)
    mask = d > max(24.0, 0.25 * float(d.max()))
    return Image.fromarray((mask * 255).astype(np.uint8), mode="L")


def folder_mask(item: WorkItem, root: Path | None, size: tuple[int, int]) -> Image.Image:
    """The item's mask file (``params['mask']``), which must have the real image's size."""
    path = resolve_item_path(str(item.params.get("mask", "")), root)
    if not path.is_file():
        raise SynthsetError(f"generate.generator.mask_dir: mask {path} is missing")
    mask = open_image(path, "L", "generate.generator.mask_dir")
    if mask.size != size:
        raise SynthsetError(
            f"generate.generator.mask_dir: mask {path} is {mask.width}x{mask.height} but its "
            f"image is {size[0]}x{size[1]}; masks must have their image's size"
        )
    return mask.point(lambda p: 255 if p >= 128 else 0)


def by_strength(
    items: Sequence[WorkItem], run: Callable[[list[int], float], list[Image.Image]]
) -> list[Image.Image]:
    """Run ``run(indices, strength)`` once per distinct strength; images back in item order."""
    out: list[Image.Image | None] = [None] * len(items)
    groups: dict[float, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(float(it.params.get("strength", 1.0)), []).append(i)
    for strength in sorted(groups):
        idx = groups[strength]
        for i, img in zip(idx, run(idx, strength), strict=True):
            out[i] = img
    return [img for img in out if img is not None]
