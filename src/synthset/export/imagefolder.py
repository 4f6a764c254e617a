"""An ImageFolder of the kept images: ``<class folder>/<item>.<ext>`` (hard links to the run's
files where the filesystem allows, else copies) and ``metadata.jsonl`` (what
``datasets.load_dataset("imagefolder")`` and torchvision's ``ImageFolder`` read). Files already
there with the right size are kept, so a killed export resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from synthset.export.base import (
    ExportJob,
    close_folder,
    finished_info,
    link_or_copy,
    open_folder,
)
from synthset.store.atomic import write_jsonl


def export_imagefolder(job: ExportJob, dest: Path) -> dict[str, Any]:
    fp = job.digest("imagefolder")
    if open_folder(dest, fp):
        return finished_info(dest)
    links = 0
    for it in tqdm(job.items, desc="imagefolder", unit="img", disable=not job.progress):
        target = dest / it.file_name
        if target.exists() and target.stat().st_size == it.path.stat().st_size:
            continue
        links += link_or_copy(it.path, target)
    write_jsonl(
        dest / "metadata.jsonl",
        ({"file_name": it.file_name} | job.sample_json(it) for it in job.items),
    )
    info = {"format": "imagefolder", "images": len(job.items), "hard_links": links}
    close_folder(dest, fp, info)
    return info
