"""The retrieve stage's files: ``retrieve/retrieved.jsonl`` (one row per retrieved image: its
copy's path, label, class name, rank, pool key, similarity, caption) and ``summary.json``."""

from __future__ import annotations

from pathlib import Path

from synthset.errors import SynthsetError
from synthset.store.atomic import read_jsonl

RETRIEVED_FILE = "retrieved.jsonl"
SUMMARY_FILE = "summary.json"


def retrieved_samples(folder: Path) -> list[tuple[Path, int]]:
    """``(path, label)`` of the retrieved images listed in ``folder/retrieved.jsonl``."""
    table = Path(folder) / RETRIEVED_FILE
    if not table.is_file():
        raise SynthsetError(f"retrieve: {table} is missing; run 'synthset retrieve' first")
    return [(Path(folder) / r["path"], int(r["label"])) for r in read_jsonl(table)]
