"""What an exporter gets (:class:`ExportJob`) and the folder discipline every exporter shares:
each format writes into its own folder, marked with the fingerprint of what it holds, so a
rerun with the same input resumes (finished parts are kept) and a changed input starts over."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from synthset.errors import SynthsetError
from synthset.recipe import ExportSpec
from synthset.store.atomic import atomic_write_json, temp_path
from synthset.store.labels import LabelTable

MARKER = ".synthset-export.json"


@dataclass(frozen=True)
class ExportItem:
    """One kept synthetic image and its metadata row."""

    item_id: str
    path: Path
    label: int
    class_name: str
    file_name: str  # relative to the synthetic ImageFolder (``<class folder>/<item>.png``)
    meta: dict[str, Any]  # the row of images/metadata.jsonl (prompt, seed, generator, ...)


class KeptItems(Sequence[ExportItem]):
    """The kept rows of the synthetic index as :class:`ExportItem` s, each built when read (the
    rows are already in memory; no second copy per image)."""

    def __init__(self, rows: Sequence[dict[str, Any]], class_names: list[str]) -> None:
        self._rows = rows
        self._names = class_names

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> ExportItem: ...

    @overload
    def __getitem__(self, index: slice) -> list[ExportItem]: ...

    def __getitem__(self, index: int | slice) -> ExportItem | list[ExportItem]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        r = self._rows[index]
        return ExportItem(
            item_id=str(r["item_id"]),
            path=Path(r["path"]),
            label=int(r["label"]),
            class_name=self._names[int(r["label"])],
            file_name=str(r["file_name"]),
            meta=r,
        )


@dataclass(frozen=True)
class ExportJob:
    items: Sequence[ExportItem]
    class_names: list[str]
    images_root: Path
    spec: ExportSpec
    seed: int
    progress: bool = True
    labels: LabelTable | None = None  # labels/labels.jsonl, one row per item id on demand
    labels_dir: Path | None = None

    def labels_of(self, fmt: str) -> LabelTable:
        """The label rows a box/mask format needs; none is a one-line error."""
        if self.labels is None:
            raise SynthsetError(
                f"export.formats {fmt} writes boxes and masks: add a 'labels' section (e.g. "
                "labels: {method: cross_attention}) so the images are labeled first"
            )
        return self.labels

    def sample_json(self, item: ExportItem) -> dict[str, Any]:
        """The metadata an image carries in every format: its row without local paths, and its
        objects when the run has labels."""
        drop = {"path", "file_name"}
        meta = {k: v for k, v in item.meta.items() if k not in drop} | {
            "item_id": item.item_id,
            "label": item.label,
            "class_name": item.class_name,
        }
        if self.labels is not None:
            meta["objects"] = self.labels[item.item_id]["objects"]
        return meta

    def digest(self, *settings: Any) -> str:
        """What an export's content depends on: the items (id, label, file size and time), their
        labels when the run has them, and the format's settings."""
        h = hashlib.sha256(json.dumps([self.class_names, settings], default=str).encode())
        if self.labels is not None:
            h.update(self.labels.digest.encode())
        for it in self.items:
            st = it.path.stat()
            h.update(
                f"{it.item_id}\0{it.label}\0{it.file_name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
            )
        return h.hexdigest()[:16]


Exporter = Callable[[ExportJob, Path], dict[str, Any]]


def open_folder(dest: Path, fingerprint: str) -> bool:
    """Make ``dest`` ready for an export with ``fingerprint``; True when it already holds a
    finished one. A folder from another input is cleared (it is synthset's own: it carries the
    marker); a non-empty folder without the marker is refused in one line."""
    marker = dest / MARKER
    if marker.exists():
        old = json.loads(marker.read_text())
        if old.get("fingerprint") == fingerprint:
            return bool(old.get("complete"))
        shutil.rmtree(dest)
    elif dest.exists() and any(dest.iterdir()):
        raise SynthsetError(
            f"export.out_dir: {dest} is not empty and was not written by synthset export; "
            "choose another folder (--to DIR) or empty it"
        )
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SynthsetError(
            f"export.out_dir: {dest.parent} is a file or lies under one; give a folder (--to DIR)"
        ) from None
    atomic_write_json(marker, {"fingerprint": fingerprint, "complete": False})
    return False


def close_folder(dest: Path, fingerprint: str, info: dict[str, Any]) -> None:
    """Mark the export finished (the last write)."""
    atomic_write_json(dest / MARKER, {"fingerprint": fingerprint, "complete": True, **info})


def finished_info(dest: Path) -> dict[str, Any]:
    info = json.loads((dest / MARKER).read_text())
    return {k: v for k, v in info.items() if k not in ("fingerprint", "complete")}


def link_or_copy(src: Path, target: Path) -> bool:
    """Put ``src`` at ``target`` atomically: a hard link where the filesystem allows (True),
    else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        os.link(src, tmp)
        linked = True
    except OSError:  # another filesystem, or links not allowed
        shutil.copyfile(src, tmp)
        linked = False
    os.replace(tmp, target)
    return linked
