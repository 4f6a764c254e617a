"""The curated view: ``curate/kept.jsonl``, one row per synthetic image (item id, file name,
label, kept, reason, scores). Readers of the synthetic set go through :func:`kept_of` when a
recipe curates; the images themselves are never moved or deleted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthset.errors import SynthsetError
from synthset.store.atomic import read_jsonl

KEPT_FILE = "kept.jsonl"
SUMMARY_FILE = "curate.json"


def read_view(curate_dir: Path) -> list[dict[str, Any]]:
    """Every row of the view (kept or not); a missing view is a one-line error."""
    path = Path(curate_dir) / KEPT_FILE
    if not path.exists():
        raise SynthsetError(f"no curated view in {curate_dir}: run 'synthset curate' first")
    return read_jsonl(path)


def kept_of(curate_dir: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the synthetic index (``read_rows``) that the view keeps, in index order."""
    kept = {r.get("item_id") for r in read_view(curate_dir) if r.get("kept")}
    return [r for r in rows if r.get("item_id") in kept]
