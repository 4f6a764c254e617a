"""WebDataset tar shards: ``shard-000000.tar``, … each holding per image ``<key>.<ext>`` (the
stored bytes, not re-encoded), ``<key>.cls`` (the integer label) and ``<key>.json`` (its
metadata). Shard boundaries follow from the items alone (``shard_max_count`` and, with
``shard_max_bytes``, the file sizes), so a killed export resumes at the first missing shard and
every shard is byte-identical to an uninterrupted export (fixed member times)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from synthset.errors import SynthsetError
from synthset.export.base import (
    ExportItem,
    ExportJob,
    close_folder,
    finished_info,
    open_folder,
)
from synthset.store.atomic import temp_path

BLOCK, RECORD = 512, 10240  # tar: members in 512-byte blocks, the archive in 10 KiB records


def members(job: ExportJob, item: ExportItem) -> dict[str, bytes | None]:
    """A sample's tar members (the image's bytes are read when written: None here)."""
    return {
        item.path.suffix.lstrip(".").lower(): None,
        "cls": str(item.label).encode(),
        "json": json.dumps(job.sample_json(item), sort_keys=True).encode(),
    }


def _tar_bytes(job: ExportJob, item: ExportItem) -> int:
    """The exact bytes a sample's members take in a tar (a header block each + data blocks)."""
    sizes = [item.path.stat().st_size if v is None else len(v) for v in members(job, item).values()]
    return sum(BLOCK + -(-n // BLOCK) * BLOCK for n in sizes)


def _archive_bytes(samples: int) -> int:
    """The size of a tar holding ``samples`` bytes of members (end blocks, record padding)."""
    return -(-(samples + 2 * BLOCK) // RECORD) * RECORD


def shard_plan(job: ExportJob, max_count: int, max_bytes: int | None) -> list[range]:
    """Item index ranges per shard, in order; with ``max_bytes`` no shard file passes it (unless
    one sample alone does)."""
    starts = [0]
    count = size = 0
    for i, it in enumerate(job.items):
        need = _tar_bytes(job, it) if max_bytes is not None else 0
        full = count >= max_count or (
            max_bytes is not None and count > 0 and _archive_bytes(size + need) > max_bytes
        )
        if full:
            starts.append(i)
            count = size = 0
        count += 1
        size += need
    ends = [*starts[1:], len(job.items)]
    return [range(a, b) for a, b in zip(starts, ends, strict=True) if b > a]


def export_webdataset(job: ExportJob, dest: Path) -> dict[str, Any]:
    try:
        import webdataset as wds
    except ImportError:
        raise SynthsetError(
            "export format webdataset needs the webdataset package: pip install 'synthset[export]'"
        ) from None
    spec = job.spec
    fp = job.digest("webdataset", spec.shard_max_count, spec.shard_max_bytes)
    if open_folder(dest, fp):
        return finished_info(dest)
    plan = shard_plan(job, spec.shard_max_count, spec.shard_max_bytes)
    written = 0
    for n, shard in enumerate(
        tqdm(plan, desc="webdataset", unit="shard", disable=not job.progress)
    ):
        path = dest / f"shard-{n:06d}.tar"
        if path.exists():  # finished before a kill (shards appear only by rename)
            continue
        tmp = temp_path(path)
        with open(tmp, "wb") as fh:
            # an integer time: a float one costs every member a PAX header
            sink = wds.TarWriter(fh, mtime=0, user="synthset", group="synthset")
            for i in shard:
                it = job.items[i]
                sample = {
                    k: it.path.read_bytes() if v is None else v for k, v in members(job, it).items()
                }
                sink.write({"__key__": it.item_id, **sample})
            sink.close()
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        written += 1
    info = {"format": "webdataset", "shards": len(plan), "samples": len(job.items)}
    close_folder(dest, fp, info | {"pattern": f"shard-{{000000..{len(plan) - 1:06d}}}.tar"})
    return finished_info(dest) | {"written_now": written}
