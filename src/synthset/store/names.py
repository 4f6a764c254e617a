"""Safe folder names for classes: no class name can write outside the run folder."""

from __future__ import annotations

import re
import unicodedata

_UNSAFE = re.compile(r"[^\w.\- ]+", flags=re.UNICODE)
_MAX_LEN = 80
#: File systems allow 255 bytes per name; this leaves room for ``_<n>`` and temp-file affixes.
_MAX_BYTES = 200
#: Names a class folder must not take: files and folders the run folder keeps beside class
#: folders (``images/metadata.jsonl``, ``real/splits.json``, ...) and Windows device names.
RESERVED = frozenset(
    {"metadata.jsonl", "splits.json", "classes.json", "images", "real"}
    | {"adapt", "cache", "evaluate", "stages", "stale", "tune", "manifest.jsonl", "plan.jsonl"}
    | {"prompts.jsonl", "recipe.yaml", "provenance.json", "report.html"}
    | {"con", "prn", "aux", "nul"}
    | {f"{dev}{i}" for dev in ("com", "lpt") for i in range(1, 10)}
)


def safe_folder_name(name: str) -> str:
    """A single path component for ``name``: separators, control characters and leading dots
    removed; at most 80 characters and 200 UTF-8 bytes; never empty, ``.``, ``..`` or a name
    the run folder reserves (those get a ``_class`` suffix)."""
    text = unicodedata.normalize("NFKC", name)
    text = _UNSAFE.sub("_", text).strip(" ._")
    text = re.sub(r"\s+", " ", text)[:_MAX_LEN]
    while len(text.encode("utf-8")) > _MAX_BYTES:
        text = text[:-1]
    text = text.rstrip(" ._") or "class"
    return f"{text}_class" if text.lower() in RESERVED else text


def folder_names(class_names: list[str]) -> list[str]:
    """Unique safe folder names, one per class, in order (case-insensitively unique, so they also
    stay apart on case-insensitive file systems) and **sorting in class order**: torchvision's
    ``ImageFolder`` numbers classes by sorted folder name, so when the names would sort in
    another order than the class list, each gets its zero-padded class id as a prefix
    (``0_cat``, ``1_dog``, ``2_ship``, ``3_frog``): both loaders give an image the same label."""
    seen: set[str] = set()
    result: list[str] = []
    for name in class_names:
        base = safe_folder_name(name)
        candidate, n = base, 2
        while candidate.lower() in seen:
            candidate, n = f"{base}_{n}", n + 1
        seen.add(candidate.lower())
        result.append(candidate)
    if result == sorted(result):
        return result
    width = len(str(len(result) - 1))
    return [f"{i:0{width}d}_{folder}" for i, folder in enumerate(result)]
