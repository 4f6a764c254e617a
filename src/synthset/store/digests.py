"""Content digests of the files a stage reads: a stage reruns when one of them changes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def file_digest(path: Path) -> str | None:
    """sha256 of a file's bytes, read in blocks (None when it does not exist)."""
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_digest(folder: Path) -> str | None:
    """sha256 of a folder's listing: every file's relative path, size and modification time
    (a user's image folder can be large; its listing changes whenever a file is added, removed
    or rewritten). None when the folder does not exist."""
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            stat = path.stat()
            rel = path.relative_to(folder).as_posix()
            digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def inputs_digest(paths: Iterable[Path]) -> str:
    """One short digest of several inputs: files by content, folders by listing."""
    digest = hashlib.sha256()
    for path in paths:
        part = folder_digest(path) if path.is_dir() else file_digest(path)
        digest.update(f"{path.name}\0{part}\n".encode())
    return digest.hexdigest()[:16]
