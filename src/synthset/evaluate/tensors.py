"""Decode-once data: image files become one uint8 tensor ``N×C×H×W`` plus int64 labels.

Every image is read, converted to 1 or 3 channels and resized to a square ``size×size`` exactly
once; training then only indexes into the tensor, so epochs never touch the disk again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synthset.classes import ClassResolver, class_infos
from synthset.data.images import common_format, open_image, to_8bit
from synthset.data.splits import Samples, scan_imagefolder
from synthset.errors import SynthsetError
from synthset.store.atomic import temp_path


@dataclass(frozen=True)
class TensorSet:
    """Decoded images (uint8, ``N×C×H×W``) and their labels (int64, ``N``)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @staticmethod
    def concat(sets: Sequence[TensorSet]) -> TensorSet:
        """One set holding the images of all ``sets``, in order."""
        return TensorSet(torch.cat([s.images for s in sets]), torch.cat([s.labels for s in sets]))


def infer_format(samples: Samples, what: str = "real train") -> tuple[int, int]:
    """Default ``(image_size, channels)`` from the most common format of ``samples``
    (:func:`~synthset.data.images.common_format`): its larger side, and 1 channel if it is
    grayscale, else 3."""
    if not samples:
        raise SynthsetError(f"{what}: no images to infer the image size and channels from")
    fmt = common_format([path for path, _ in samples], what)
    return max(fmt.size), fmt.channels


def to_array(img: Image.Image, size: int, channels: int) -> np.ndarray:
    """One image as a uint8 ``C×size×size`` array (8-bit as every stage reads it, see
    :func:`~synthset.data.images.to_8bit`; bilinear resize; 1 or 3 channels)."""
    return _resized(to_8bit(img, "L" if channels == 1 else "RGB"), size)


def _resized(img: Image.Image, size: int) -> np.ndarray:
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load_tensors(
    samples: Samples, size: int, channels: int, what: str, cache_dir: Path | None = None
) -> TensorSet:
    """Decode every ``(path, label)`` once into a :class:`TensorSet`.

    With ``cache_dir``, the decoded images are kept there as a ``.npy`` file keyed by the files'
    paths, sizes and modification times and by ``size``/``channels``, and later calls memory-map
    it instead of decoding again (sets larger than RAM stay on disk; pages load on demand)."""
    if not samples:
        raise SynthsetError(f"{what}: the image set is empty")
    if channels not in (1, 3):
        raise SynthsetError(f"{what}: channels must be 1 or 3 (got {channels})")
    if size < 1:
        raise SynthsetError(f"{what}: image size must be positive (got {size})")
    labels = torch.tensor([int(lbl) for _, lbl in samples], dtype=torch.int64)
    shape = (len(samples), channels, size, size)
    if cache_dir is None:
        out = np.empty(shape, dtype=np.uint8)
        _decode_into(out, samples, size, channels, what)
        return TensorSet(torch.from_numpy(out), labels)
    path = Path(cache_dir) / f"{_cache_key(samples, size, channels, what)}.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        _decode_into(out, samples, size, channels, what)
        out.flush()
        del out
        os.replace(tmp, path)  # atomic: a killed decode leaves no half cache behind
    images = np.load(path, mmap_mode="c")  # copy-on-write: torch may index it freely
    return TensorSet(torch.from_numpy(images), labels)


def _decode_into(out: np.ndarray, samples: Samples, size: int, channels: int, what: str) -> None:
    mode = "L" if channels == 1 else "RGB"
    for i, (path, _) in enumerate(samples):
        out[i] = _resized(open_image(path, mode, what), size)


def _cache_key(samples: Samples, size: int, channels: int, what: str) -> str:
    """Changes whenever a file, its order, the size or the channels change."""
    digest = hashlib.sha256(f"{size}:{channels}".encode())
    for path, _ in samples:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise SynthsetError(f"{what}: image file not found: {path}") from None
        digest.update(f"\0{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    slug = "".join(ch if ch.isalnum() else "-" for ch in what)
    return f"{slug}-{digest.hexdigest()[:20]}"


def check_labels(data: TensorSet, num_classes: int, what: str) -> None:
    """Raise a SynthsetError if a label lies outside ``0..num_classes-1``."""
    bad = (data.labels < 0) | (data.labels >= num_classes)
    if bool(bad.any()):
        lbl = int(data.labels[bad][0])
        raise SynthsetError(
            f"{what}: label {lbl} is outside 0..{num_classes - 1} ({num_classes} classes); "
            "the images' labels must match the class list"
        )


def samples_from_imagefolder(root: Path | str, class_names: list[str]) -> Samples:
    """``(path, label)`` for ``root/<class>/*`` where ``<class>`` is a class's safe folder name
    (as ``classes.json`` would give it) or its name, matched by :class:`ClassResolver`; the
    label is the class's index in ``class_names``."""
    resolver = ClassResolver(class_infos(class_names))
    return scan_imagefolder(Path(root), resolver, f"imagefolder {root}")
