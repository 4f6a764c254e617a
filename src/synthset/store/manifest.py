"""The append-only manifest: one JSON line per finished item, the one truth for "done"."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from synthset.errors import SynthsetError
from synthset.store.atomic import read_jsonl


class Manifest:
    """Append-only record of finished items. A line is appended only after its image is in place,
    so a kill at any instant leaves at most a torn last line, which readers ignore.

    Each shard appends to its own file (``manifest.shard1of4.jsonl``) so that processes on
    different nodes never write to one file, and so does each queue worker of a shard
    (``manifest.shard1of4.q2.jsonl``); readers take the union of all of them."""

    def __init__(
        self, path: Path, shard: tuple[int, int] = (0, 1), worker: int | None = None
    ) -> None:
        index, count = shard
        self.base = path
        if worker is not None:
            self.path = path.with_name(f"{path.stem}.shard{index}of{count}.q{worker}.jsonl")
        elif count == 1:
            self.path = path
        else:
            self.path = path.with_name(f"{path.stem}.shard{index}of{count}.jsonl")
        self._lock = threading.Lock()
        self._offsets: dict[Path, int] = {}

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the writer lock of this manifest file while generating into it: an OS file lock
        (``<manifest>.lock``) that the kernel releases even when the process is killed. A second
        process on the same run folder and shard gets a one-line error instead of racing."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path.with_name(self.path.name + ".lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise SynthsetError(
                f"another 'synthset generate' is writing {self.path} right now; wait for it to "
                "finish, or run this one with another --shard or --out"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def files(self) -> list[Path]:
        """Every manifest file of this run (the unsharded one and each shard's)."""
        shards = sorted(self.base.parent.glob(f"{self.base.stem}.shard*of*.jsonl"))
        return [p for p in [self.base, *shards] if p.exists()]

    def rows(self) -> list[dict[str, Any]]:
        """Every recorded entry of every manifest file."""
        return [row for f in self.files() for row in read_jsonl(f) if "item_id" in row]

    def entries(self) -> dict[str, dict[str, Any]]:
        """Finished items by item id (the last entry read wins)."""
        return {row["item_id"]: row for row in self.rows()}

    def new_rows(self) -> list[dict[str, Any]]:
        """The complete rows appended to any manifest file since the last call (every row on
        the first call): one pass over only the new bytes, for workers that poll."""
        rows = []
        for f in self.files():
            start = self._offsets.get(f, 0)
            with open(f, "rb") as fh:
                fh.seek(start)
                data = fh.read()
            end = data.rfind(b"\n") + 1  # a torn last line waits for its end
            self._offsets[f] = start + end
            for line in data[:end].splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and "item_id" in row:
                    rows.append(row)
        return rows

    def repair(self) -> None:
        """Drop a torn last line left by a kill, so new appends start on a fresh line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as fh:
                fh.truncate(cut)

    def append(self, entry: dict[str, Any]) -> None:
        """Append one finished item and fsync, so it survives a crash."""
        self.extend([entry])

    def extend(self, entries: list[dict[str, Any]]) -> None:
        """Append finished items in one write and one fsync (a batch's rows: a kill leaves at
        most a torn last line, and every whole line is an item whose image is in place)."""
        if not entries:
            return
        data = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
