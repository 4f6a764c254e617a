"""A continual-learning stream (the i-Blurry / "Just Say the Name" layout): classes arrive in a
seeded order, ``stream_task_size`` at a time; within a task its images come in a seeded random
order. ``stream.json`` holds the class order, the tasks, and the stream: one entry per image
with ``klass``, ``file_name`` (relative to ``root``, the synthetic ImageFolder), ``label`` (the
class's index in the dataset's class list), ``task`` and ``time`` (its position)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from synthset.export.base import ExportJob, close_folder, finished_info, open_folder
from synthset.store.atomic import write_json_with_lists


def export_stream(job: ExportJob, dest: Path) -> dict[str, Any]:
    spec = job.spec
    fp = job.digest("stream", spec.stream_task_size, spec.stream_shuffle_classes, job.seed)
    if open_folder(dest, fp):
        return finished_info(dest)
    rng = np.random.default_rng(job.seed)
    present = sorted({int(it.label) for it in job.items})
    order = (
        [present[i] for i in rng.permutation(len(present))]
        if spec.stream_shuffle_classes
        else present
    )
    k = spec.stream_task_size
    tasks = [order[i : i + k] for i in range(0, len(order), k)]
    labels = np.fromiter((it.label for it in job.items), dtype=np.int64, count=len(job.items))
    names = job.class_names

    def stream() -> Iterator[dict[str, Any]]:
        time = 0
        for t, task in enumerate(tasks):
            mine = np.flatnonzero(np.isin(labels, task))
            for j in rng.permutation(len(mine)):
                it = job.items[int(mine[j])]
                yield {
                    "klass": it.class_name,
                    "file_name": it.file_name,
                    "label": it.label,
                    "task": t,
                    "time": time,
                    "item_id": it.item_id,
                }
                time += 1

    head = {
        "root": str(job.images_root),
        "seed": job.seed,
        "task_size": k,
        "classes": [names[c] for c in order],
        "tasks": [[names[c] for c in task] for task in tasks],
    }
    samples = write_json_with_lists(dest / "stream.json", head, {"stream": stream()})["stream"]
    info = {"format": "stream", "samples": samples, "tasks": len(tasks), "path": "stream.json"}
    close_folder(dest, fp, info)
    return info
