"""The curated view: ``curate/kept.jsonl``, one row per synthetic image (item id, file name,
label, kept, reason, scores). Readers of the synthetic set go through :func:`kept_samples`
when a recipe curates; the images themselves are never moved or deleted."""

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


def kept_rows(curate_dir: Path) -> list[dict[str, Any]]:
    """The view's kept rows."""
    return [r for r in read_view(curate_dir) if r["kept"]]


def kept_samples(curate_dir: Path, images_dir: Path) -> list[tuple[Path, int]]:
    """``(path, label)`` of every kept image, in the synthetic index's order."""
    return [(Path(images_dir) / r["file_name"], int(r["label"])) for r in kept_rows(curate_dir)]
