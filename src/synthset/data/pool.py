"""An unlabeled image pool to retrieve from (``retrieve.pool``), read as a stream of
:class:`PoolItem`: a folder of images, WebDataset ``.tar`` shards, or a Hugging Face dataset
written by ``save_to_disk``. Items come in a fixed order with stable keys, so two passes (embed,
then copy the chosen images) see the same items."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from synthset.data.splits import IMAGE_SUFFIXES
from synthset.errors import SynthsetError, first_line

WDS_IMAGE_KEYS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff")
WDS_CAPTION_KEYS = ("txt", "caption", "text")
FIELD = "retrieve.pool"


@dataclass(frozen=True)
class PoolItem:
    """One pool image: its stable key, the decoded image and its caption (None when absent)."""

    key: str
    image: Image.Image
    caption: str | None


def pool_kind(path: Path) -> str:
    """``hf``, ``webdataset`` or ``folder``; a missing path is a one-line error."""
    path = Path(path)
    if not path.exists():
        raise SynthsetError(
            f"{FIELD}: {path} does not exist; give a folder of images, WebDataset .tar shards "
            "or a folder written by datasets' save_to_disk"
        )
    if path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "state.json")):
        return "hf"
    if path.suffix == ".tar" or (path.is_dir() and _shards(path)):
        return "webdataset"
    return "folder"


def _shards(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.rglob("*.tar"))


def iter_pool(
    path: Path,
    image_column: str = "image",
    caption_column: str = "text",
    only: set[str] | None = None,
) -> Iterator[PoolItem]:
    """Every image of the pool (or only those whose key is in ``only``), in a fixed order."""
    form = pool_kind(path)
    if form == "hf":
        yield from _hf_items(Path(path), image_column, caption_column, only)
    elif form == "webdataset":
        yield from _wds_items(Path(path), only)
    else:
        yield from _folder_items(Path(path), only)


def _folder_items(root: Path, only: set[str] | None) -> Iterator[PoolItem]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    for f in files:
        if only is not None and str(f.relative_to(root)) not in only:
            continue
        text = f.with_suffix(".txt")
        caption = text.read_text(encoding="utf-8").strip() if text.is_file() else None
        yield PoolItem(str(f.relative_to(root)), _decode(f.read_bytes(), str(f)), caption)


def _wds_items(path: Path, only: set[str] | None) -> Iterator[PoolItem]:
    try:
        import webdataset as wds
    except ImportError:
        raise SynthsetError(f"{FIELD}: .tar shards need: pip install webdataset") from None
    base = path if path.is_dir() else path.parent
    for shard in _shards(path):
        name = str(shard.relative_to(base))
        for sample in wds.WebDataset(str(shard), shardshuffle=False, empty_check=False):
            image_key = next((k for k in WDS_IMAGE_KEYS if k in sample), None)
            where = f"{name}:{sample['__key__']}"
            if image_key is None or (only is not None and where not in only):
                continue
            text_key = next((k for k in WDS_CAPTION_KEYS if k in sample), None)
            caption = sample[text_key].decode("utf-8").strip() if text_key else None
            yield PoolItem(where, _decode(sample[image_key], where), caption)


def _hf_items(
    path: Path, image_column: str, caption_column: str, only: set[str] | None
) -> Iterator[PoolItem]:
    try:
        import datasets
    except ImportError:
        raise SynthsetError(f"{FIELD}: a HF dataset needs datasets: pip install datasets") from None
    try:
        ds: Any = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds for a bad folder
        raise SynthsetError(f"{FIELD}: cannot load {path} ({first_line(exc)})") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
    if image_column not in ds.column_names:
        raise SynthsetError(
            f"retrieve.image_column: {path} has no column {image_column!r} (it has: "
            f"{', '.join(ds.column_names)}); set retrieve.image_column"
        )
    has_caption = caption_column in ds.column_names
    rows = range(len(ds)) if only is None else sorted(int(k.removeprefix("row-")) for k in only)
    for i in rows:
        row = ds[i]
        image = row[image_column]
        if isinstance(image, dict) and image.get("bytes") is not None:
            image = _decode(image["bytes"], f"row {i}")
        if not isinstance(image, Image.Image):
            raise SynthsetError(f"retrieve.image_column {image_column!r}: row {i} is not an image")
        caption = str(row[caption_column]) if has_caption and row[caption_column] else None
        yield PoolItem(f"row-{i:09d}", image, caption)


def _decode(data: bytes, where: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.copy()
    except (OSError, ValueError) as exc:
        raise SynthsetError(f"{FIELD}: cannot read image {where} ({first_line(exc)})") from None
