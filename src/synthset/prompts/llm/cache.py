"""A persistent on-disk cache of LLM answers, keyed by ``ChatRequest.cache_key(model)``.

Format: one SQLite database (``llm_cache.sqlite``) with a ``(key TEXT PRIMARY KEY, text TEXT)``
table. SQLite rather than append-only JSONL because:

- every ``put`` is its own committed transaction: a kill at any instant leaves the answers
  committed before it, never a torn record (the journal rolls a half-written one back);
- several threads *and* several processes (executors on one node, reruns) can share the file:
  SQLite's file locks serialize writers, WAL mode lets readers go on meanwhile;
- lookups are indexed on disk, so a large cache is not read into memory at start.

Only answer texts are stored, keyed by a hash of (model, messages, params): never API keys.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

CACHE_FILENAME = "llm_cache.sqlite"


class ResponseCache:
    """``get(key) -> text | None`` and ``put(key, text)`` on a SQLite file; thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        """Open the database on first use (the constructor only stores the path)."""
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, text TEXT)")
            conn.commit()
            self._conn = conn
        return self._conn

    def get(self, key: str) -> str | None:
        """The cached answer for ``key``, or None."""
        with self._lock:
            row = (
                self._connect().execute("SELECT text FROM answers WHERE key = ?", (key,)).fetchone()
            )
        return None if row is None else row[0]

    def put(self, key: str, text: str) -> None:
        """Store (or replace) the answer for ``key``; committed before returning."""
        with self._lock:
            conn = self._connect()
            with conn:  # one transaction per answer
                conn.execute(
                    "INSERT OR REPLACE INTO answers (key, text) VALUES (?, ?)", (key, text)
                )

    def __len__(self) -> int:
        with self._lock:
            return self._connect().execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        """Close the connection (reopened on next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
