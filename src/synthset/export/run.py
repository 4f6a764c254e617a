"""The export stage: every format of ``export.formats`` into ``<out_dir>/<format>/``, and a
summary (``export/export.json`` in the run folder) of what each holds and how long it took."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from synthset.classes import ClassInfo
from synthset.export.base import ExportJob, KeptItems
from synthset.export.registry import EXPORTERS
from synthset.recipe import ExportSpec
from synthset.store.atomic import atomic_write_json
from synthset.store.labels import LabelTable

SUMMARY = "export.json"


def export_all(
    spec: ExportSpec,
    rows: list[dict[str, Any]],
    classes: list[ClassInfo],
    images_root: Path,
    default_dir: Path,
    seed: int,
    progress: bool = True,
    labels_dir: Path | None = None,
) -> dict[str, Any]:
    """Write each format; ``rows``: the kept rows of the synthetic index (with ``path``);
    ``labels_dir``: the labels stage's folder, for the box and mask formats."""
    names = [c.name for c in classes]
    out = Path(spec.out_dir) if spec.out_dir is not None else default_dir
    done: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        labels = stack.enter_context(LabelTable(labels_dir)) if labels_dir is not None else None
        items = KeptItems(rows, names)
        job = ExportJob(items, names, images_root, spec, seed, progress, labels, labels_dir)
        for fmt in spec.formats:
            start = time.perf_counter()
            info = EXPORTERS.load(fmt)(job, out / fmt)
            done[fmt] = info | {
                "seconds": round(time.perf_counter() - start, 3),
                "dir": str(out / fmt),
            }
    summary = {"images": len(rows), "formats": done}
    atomic_write_json(default_dir / SUMMARY, summary)
    return summary
