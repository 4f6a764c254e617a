"""The append-only manifest: one JSON line per finished item, the one truth for "done"."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from synthset.store.atomic import read_jsonl


class Manifest:
    """Append-only record of finished items. A line is appended only after its image is in place,
    so a kill at any instant leaves at most a torn last line, which readers ignore."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def entries(self) -> dict[str, dict[str, Any]]:
        """Finished items by item id (the last entry wins)."""
        return {row["item_id"]: row for row in read_jsonl(self.path) if "item_id" in row}

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
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
