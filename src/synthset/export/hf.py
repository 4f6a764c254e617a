"""Hugging Face ``datasets``: ``hf`` is a ``save_to_disk`` folder (``load_from_disk`` reads it),
``parquet`` one Parquet file with the images embedded (``load_dataset("parquet", ...)``). The
rows stream through ``Dataset.from_generator`` (Arrow batches on disk), so memory does not grow
with the set; each is written beside its destination and renamed into place. With
``export.push_to_hub`` the set is also pushed, with the token from ``export.token_env``."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from synthset.errors import SynthsetError, first_line
from synthset.export.base import ExportJob, close_folder, finished_info, open_folder
from synthset.store.atomic import temp_path

EXTRA_COLUMNS = ("prompt", "seed", "generator")


def _dataset(job: ExportJob, cache: Path) -> Any:
    try:
        from datasets import ClassLabel, Dataset, Features, Image, Sequence, Value
    except ImportError:
        raise SynthsetError(
            "export formats hf and parquet need the datasets package: "
            "pip install 'synthset[export]'"
        ) from None
    columns: dict[str, Any] = {
        "image": Image(),
        "label": ClassLabel(names=job.class_names),
        "item_id": Value("string"),
        "prompt": Value("string"),
        "seed": Value("int64"),
        "generator": Value("string"),
    }
    if job.labels is not None:  # Hugging Face's object-detection layout: COCO boxes per object
        columns["objects"] = {
            "bbox": Sequence(Sequence(Value("float32"), length=4)),
            "category": Sequence(ClassLabel(names=job.class_names)),
            "area": Sequence(Value("int64")),
            "segmentation": Sequence(Sequence(Value("float32"))),
        }
    features = Features(columns)

    def rows() -> Iterator[dict[str, Any]]:
        for it in job.items:
            meta = job.sample_json(it)
            row = {
                "image": {"bytes": it.path.read_bytes(), "path": Path(it.file_name).name},
                "label": it.label,
                "item_id": it.item_id,
                **{k: meta.get(k) for k in EXTRA_COLUMNS},
            }
            if job.labels is not None:
                row["objects"] = hf_objects(meta["objects"])
            yield row

    return Dataset.from_generator(rows, features=features, cache_dir=str(cache))


def hf_objects(objects: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """One image's objects as Hugging Face's detection columns: [x, y, w, h] boxes, class ids,
    areas and flat polygons."""
    return {
        "bbox": [
            [o["box"][0], o["box"][1], o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]]
            for o in objects
        ],
        "category": [o["class_id"] for o in objects],
        "area": [o["area"] for o in objects],
        "segmentation": [[c for point in o["polygon"] for c in point] for o in objects],
    }


def _push(ds: Any, job: ExportJob) -> str | None:
    repo = job.spec.push_to_hub
    if repo is None:
        return None
    token = os.environ.get(job.spec.token_env)
    if not token:
        raise SynthsetError(
            f"export.push_to_hub {repo}: set the environment variable {job.spec.token_env} "
            "(export.token_env) to a Hub token with write access"
        )
    try:
        ds.push_to_hub(repo, token=token)
    except Exception as exc:  # network, permissions: one line, the token never printed
        raise SynthsetError(f"export.push_to_hub {repo}: {first_line(exc)}") from None
    return repo


def _export(
    job: ExportJob, dest: Path, fmt: str, name: str, write: Callable[[Any, Path], Any]
) -> dict[str, Any]:
    """Build the dataset, ``write(ds, tmp)`` it beside ``dest/name`` and rename it into place."""
    fp = job.digest(fmt, job.spec.push_to_hub if fmt == "hf" else None)
    if open_folder(dest, fp):
        return finished_info(dest)
    with tempfile.TemporaryDirectory(dir=dest) as work:
        ds = _dataset(job, Path(work) / "cache")
        target = dest / name
        tmp = temp_path(target)
        write(ds, tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        pushed = _push(ds, job) if fmt == "hf" else None
    info = {"format": fmt, "rows": len(job.items), "path": name, "pushed_to": pushed}
    close_folder(dest, fp, info)
    return info


def export_hf(job: ExportJob, dest: Path) -> dict[str, Any]:
    return _export(job, dest, "hf", "dataset", lambda ds, tmp: ds.save_to_disk(str(tmp)))


def export_parquet(job: ExportJob, dest: Path) -> dict[str, Any]:
    return _export(job, dest, "parquet", "data.parquet", lambda ds, tmp: ds.to_parquet(str(tmp)))
