"""An ImageFolder of the kept images: ``<class folder>/<item>.<ext>`` (hard links to the run's
files where the filesystem allows, else copies) and ``metadata.jsonl`` (what
``datasets.load_dataset("imagefolder")`` and torchvision's ``ImageFolder`` read). Files already
there with the right size are kept, so a killed export resumes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from tqdm import tqdm

from synthset.export.base import ExportJob, close_folder, finished_info, open_folder, sample_json
from synthset.store.atomic import temp_path, write_jsonl


def export_imagefolder(job: ExportJob, dest: Path) -> dict[str, Any]:
    fp = job.digest("imagefolder")
    if open_folder(dest, fp):
        return finished_info(dest)
    links = 0
    for it in tqdm(job.items, desc="imagefolder", unit="img", disable=not job.progress):
        target = dest / it.file_name
        if target.exists() and target.stat().st_size == it.path.stat().st_size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(target)
        try:
            os.link(it.path, tmp)
            links += 1
        except OSError:  # another filesystem, or links not allowed
            shutil.copyfile(it.path, tmp)
        os.replace(tmp, target)
    write_jsonl(
        dest / "metadata.jsonl",
        [{"file_name": it.file_name} | sample_json(it) for it in job.items],
    )
    info = {"format": "imagefolder", "images": len(job.items), "hard_links": links}
    close_folder(dest, fp, info)
    return info
