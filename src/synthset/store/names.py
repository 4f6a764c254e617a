"""Safe folder names for classes: no class name can write outside the run folder."""

from __future__ import annotations

import re
import unicodedata

_UNSAFE = re.compile(r"[^\w.\- ]+", flags=re.UNICODE)
_MAX_LEN = 80


def safe_folder_name(name: str) -> str:
    """A single path component for ``name``: separators, control characters and leading dots
    removed; never empty, ``.`` or ``..``."""
    text = unicodedata.normalize("NFKC", name)
    text = _UNSAFE.sub("_", text).strip(" ._")
    text = re.sub(r"\s+", " ", text)
    return text[:_MAX_LEN].rstrip(" ._") or "class"


def folder_names(class_names: list[str]) -> list[str]:
    """Unique safe folder names, one per class, in order (case-insensitively unique, so they also
    stay apart on case-insensitive file systems)."""
    seen: set[str] = set()
    result: list[str] = []
    for name in class_names:
        base = safe_folder_name(name)
        candidate, n = base, 2
        while candidate.lower() in seen:
            candidate, n = f"{base}_{n}", n + 1
        seen.add(candidate.lower())
        result.append(candidate)
    return result
