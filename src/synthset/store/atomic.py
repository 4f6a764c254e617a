"""Atomic file writes: write a temp file in the same folder, fsync, then rename over the target."""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp's files are private (0600)


#: A temp file: ``.<final name>.<writer pid>.<random>.tmp`` (older writers left the pid out).
_TEMP = re.compile(r"^\.(?P<final>.+?)(?:\.(?P<pid>\d+))?\.[A-Za-z0-9_]+\.tmp$")
#: A temp file without a writer pid counts as left behind once it is this old.
_ORPHAN_SECONDS = 3600.0


def temp_path(path: Path) -> Path:
    """A fresh temp name beside ``path`` that says which process writes it."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def temp_target(tmp: Path) -> str | None:
    """The final file name a temp file was written for (None: not a temp file)."""
    m = _TEMP.match(tmp.name)
    return m["final"] if m else None


def remove_dead_temp_files(folder: Path) -> int:
    """Delete the temp files under ``folder`` whose writer is dead (a kill mid-write leaves one
    per kill); a running writer's are kept. Returns how many were removed."""
    removed = 0
    for tmp in folder.rglob(".*.tmp") if folder.is_dir() else []:
        m = _TEMP.match(tmp.name)
        if m is None or not tmp.is_file():
            continue
        pid = int(m["pid"]) if m["pid"] else None
        try:
            orphan = time.time() - tmp.stat().st_mtime > _ORPHAN_SECONDS
        except OSError:
            continue
        if (pid is None and orphan) or (pid is not None and not _alive(pid)):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Create ``path`` atomically: readers see the old file or the whole new one, never a part.
    The file gets the usual permissions (0666 minus the umask), like one made with open()."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
    )
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` atomically."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows as JSON lines to ``path`` atomically, one at a time (a generator of rows is
    never held in memory whole)."""

    def write(fh: IO[bytes]) -> None:
        for r in rows:
            fh.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))

    atomic_write(path, write)


def write_json_with_lists(
    path: Path, head: dict[str, Any], lists: dict[str, Iterable[Any]]
) -> dict[str, int]:
    """Write ``head`` plus one list per key of ``lists`` as one JSON document, atomically and a
    record at a time (no list is ever in memory whole; each iterable is consumed in turn);
    returns how many records each list got."""
    counts = dict.fromkeys(lists, 0)

    def write(fh: IO[bytes]) -> None:
        fh.write(json.dumps(head)[:-1].encode())
        for n, (key, records) in enumerate(lists.items()):
            sep = ", " if head or n else ""
            fh.write(f"{sep}{json.dumps(key)}: [".encode())
            for record in records:
                fh.write((", " if counts[key] else "").encode() + json.dumps(record).encode())
                counts[key] += 1
            fh.write(b"]")
        fh.write(b"}")

    atomic_write(path, write)
    return counts


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read JSON lines; a torn last line (from a kill mid-append) is ignored."""
    return list(iter_jsonl(path))


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """:func:`read_jsonl` one row at a time (memory does not grow with the file); nothing when
    the file does not exist."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
