"""The labels table: ``labels/labels.jsonl``, one row per labeled synthetic image (item id, file
name, size, objects with class, box, polygon and area), and ``labels/masks/<class>/<item>.png``
(pixel value = the object's number in the row's list + 1, 0 = background). Exports and the
report read it from here."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from synthset.errors import SynthsetError

LABELS_FILE = "labels.jsonl"
SUMMARY_FILE = "labels.json"
MASKS_FOLDER = "masks"
#: Side files of generation that labels read: ``<run>/<folder>/<class>/<item>.<ext>``
ATTENTION_FOLDER = "attention"  # cross-attention heat maps (.npz, one array per class id)
OBJECT_MASK_FOLDER = "object_masks"  # the inpaint mode's object masks (.png, white = object)


def heat_maps_npz(maps: dict[int, np.ndarray]) -> bytes:
    """Heat maps by class id (``c<id>``), float32, as one compressed npz."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"c{cid}": np.asarray(m, np.float32) for cid, m in maps.items()})
    return buf.getvalue()


def read_heat_maps(data: bytes) -> dict[int, np.ndarray]:
    """The heat maps of one image by class id, from the bytes of its npz."""
    with np.load(io.BytesIO(data)) as npz:
        return {int(k[1:]): npz[k] for k in npz.files}


def _table_path(labels_dir: Path) -> Path:
    path = Path(labels_dir) / LABELS_FILE
    if not path.exists():
        raise SynthsetError(
            f"no labels in {labels_dir}: add a 'labels' section and run 'synthset label' first"
        )
    return path


def _item_id(line: bytes) -> str | None:
    try:
        return str(json.loads(line)["item_id"]) if line.strip() else None
    except (json.JSONDecodeError, KeyError):
        return None


class LabelTable:
    """The labels table read one row at a time, so memory does not grow with it: one streaming
    pass indexes ``labels.jsonl`` (item id -> byte offset and length, in an SQLite file in a
    temporary folder) and hashes its bytes (:attr:`digest`); a lookup is one seek. Use it as a
    context manager; a missing table is a one-line error."""

    def __init__(self, labels_dir: Path) -> None:
        self.path = _table_path(labels_dir)
        self._tmp = tempfile.TemporaryDirectory(prefix="synthset-labels-")
        self._db = sqlite3.connect(Path(self._tmp.name) / "index.sqlite")
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE rows (item_id TEXT PRIMARY KEY, start INT, size INT)")
        sha = hashlib.sha256()
        with open(self.path, "rb") as fh:
            insert = "INSERT OR REPLACE INTO rows VALUES (?, ?, ?)"
            self._db.executemany(insert, self._scan(fh, sha))
        self._db.commit()
        self.digest = sha.hexdigest()
        self._fh = open(self.path, "rb")  # noqa: SIM115 -- closed by close()

    @staticmethod
    def _scan(fh: Any, sha: Any) -> Iterator[tuple[str, int, int]]:
        start = 0
        for line in fh:
            sha.update(line)
            item_id = _item_id(line)
            if item_id is not None:  # not a blank or torn line (read_jsonl skips those too)
                yield item_id, start, len(line)
            start += len(line)

    def __getitem__(self, item_id: str) -> dict[str, Any]:
        found = self._db.execute(
            "SELECT start, size FROM rows WHERE item_id = ?", (item_id,)
        ).fetchone()
        if found is None:
            raise SynthsetError(
                f"labels: image {item_id} has no row in {self.path}; run 'synthset label' again "
                "(the kept images changed after labeling)"
            )
        self._fh.seek(found[0])
        row: dict[str, Any] = json.loads(self._fh.read(found[1]))
        return row

    def __reduce__(self) -> tuple[type[LabelTable], tuple[Path]]:
        """Pickled as its folder (``datasets`` pickles the generator that reads it)."""
        return LabelTable, (self.path.parent,)

    def close(self) -> None:
        self._fh.close()
        self._db.close()
        self._tmp.cleanup()

    def __enter__(self) -> LabelTable:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
