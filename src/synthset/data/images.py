"""The one reader of image files for every stage (adapt, the real-image generators, evaluate).

:func:`open_image` turns any file Pillow reads, in any mode (``1``, ``L``, ``P``, ``LA``, ``RGBA``,
``I;16``, ``I``, ``F``, ``CMYK`` ...), into an 8-bit ``L`` or ``RGB`` image the same way everywhere,
and an unreadable file (empty, truncated, not an image) into a one-line :class:`SynthsetError`
naming it. :func:`common_format` gives a set's size and mode from its most common image, never
from whichever file happens to sort first, and warns about the images that differ.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from synthset.errors import SynthsetError, first_line

log = logging.getLogger(__name__)

#: modes read as grayscale (``L``); every other mode (``P``, ``RGBA``, ``CMYK`` ...) reads as RGB
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
#: at most this many files (spread evenly over the set) are opened to find its common format
FORMAT_SAMPLE = 1000
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


class ImageFormat(NamedTuple):
    """A set's common ``size`` (width, height) and ``mode`` (``L`` or ``RGB``)."""

    size: tuple[int, int]
    mode: str

    @property
    def channels(self) -> int:
        """1 for ``L``, 3 for ``RGB``."""
        return 1 if self.mode == "L" else 3


def natural_mode(pil_mode: str) -> str:
    """``L`` for grayscale Pillow modes (incl. 16-bit and float), else ``RGB``."""
    return "L" if pil_mode in GRAY_MODES else "RGB"


def to_8bit(img: Image.Image, mode: str | None = None) -> Image.Image:
    """A new 8-bit ``mode`` image (``L`` or ``RGB``; default: :func:`natural_mode`) of ``img``.

    16-bit and 32-bit integer grayscale (``I;16``, ``I``) is scaled by 255/65535 (mid-grey stays
    mid-grey, nothing is clipped to white); float (``F``) is taken as 0..1 when no value exceeds
    1, else as 0..255; transparent pixels become black."""
    target = mode or natural_mode(img.mode)
    if target not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB' (got {mode!r})")
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = Image.fromarray(_gray_to_uint8(img))
    if img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), img)
    return img.convert(target)


def _gray_to_uint8(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        scale = 255.0 if arr.size and float(arr.max()) <= 1.0 else 1.0
    else:
        scale = 255.0 / 65535.0
    return np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)


def open_image(path: Path | str, mode: str | None = None, what: str = "image") -> Image.Image:
    """The image at ``path`` fully decoded as 8-bit ``mode`` (``L``/``RGB``; default: its
    :func:`natural_mode`), see :func:`to_8bit`; a one-line :class:`SynthsetError` (prefixed by
    ``what``) if it is missing or unreadable."""
    if mode not in (None, "L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB' (got {mode!r})")
    with _reading(path, what), Image.open(path) as img:
        img.load()
        return to_8bit(img, mode)


def common_format(paths: Sequence[Path | str], what: str = "images") -> ImageFormat:
    """The most common size and mode among ``paths`` (headers only; at most
    :data:`FORMAT_SAMPLE` files spread evenly over the set), with one warning saying how many
    images differ from it (they are resized and converted to it)."""
    if not paths:
        raise SynthsetError(f"{what}: no images to take the image size and mode from")
    n, k = len(paths), min(len(paths), FORMAT_SAMPLE)
    sample = [paths[i * n // k] for i in range(k)]  # every file, or k spread evenly
    formats = [_header(p, what) for p in sample]
    size = Counter(f.size for f in formats).most_common(1)[0][0]
    mode = Counter(f.mode for f in formats).most_common(1)[0][0]
    common = ImageFormat(size, mode)
    odd = [(p, f) for p, f in zip(sample, formats, strict=True) if f != common]
    if odd:
        path, fmt = odd[0]
        sampled = "sampled " if len(sample) < n else ""
        log.warning(
            "%s: %d of %d %simages differ from the most common format %s (e.g. %s is %s); "
            "they are resized and converted to it",
            what,
            len(odd),
            len(sample),
            sampled,
            _describe(common),
            path,
            _describe(fmt),
        )
    return common


def _describe(fmt: ImageFormat) -> str:
    return f"{fmt.size[0]}x{fmt.size[1]} {fmt.mode}"


def _header(path: Path | str, what: str) -> ImageFormat:
    with _reading(path, what), Image.open(path) as img:
        return ImageFormat((int(img.width), int(img.height)), natural_mode(img.mode))


@contextmanager
def _reading(path: Path | str, what: str) -> Iterator[None]:
    """Turn any failure to read ``path`` into one line naming the file and the fix."""
    try:
        yield
    except SynthsetError:
        raise
    except FileNotFoundError:
        raise SynthsetError(f"{what}: image file not found: {path}") from None
    except Exception as exc:  # Pillow raises many types on corrupt files
        if isinstance(exc, UnidentifiedImageError):
            detail = "the file is empty" if _is_empty(path) else "not an image Pillow can read"
        else:
            detail = first_line(exc)
        raise SynthsetError(
            f"{what}: cannot read image {path} ({detail}); replace or delete the file"
        ) from None


def _is_empty(path: Path | str) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False
