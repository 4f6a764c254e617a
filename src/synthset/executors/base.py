"""The executor protocol and what every executor shares: the job it runs, what "done" means
(a manifest row that matches the plan and the settings) and which chunks are still pending."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from synthset.plan import WorkItem, chunks, image_relpath, shard_chunks
from synthset.store.imagefolder import remove_stale_temp_files
from synthset.store.manifest import Manifest
from synthset.store.run_folder import RunFolder

if TYPE_CHECKING:
    from synthset.generators.base import Generator
    from synthset.recipe import GenerateSpec

log = logging.getLogger(__name__)

#: The settings fingerprint recorded with each image: one string, or one per ensemble member.
Config = str | Mapping[str, str]


@dataclass
class GenerationResult:
    """What one ``generate`` call did."""

    generated: int
    skipped: int
    shard_items: int
    seconds: float


@dataclass(frozen=True)
class GenerationJob:
    """What an executor runs: shard ``shard`` of ``plan``, images into ``images_dir`` and one
    manifest row per finished item beside ``manifest``. Whoever runs an item makes the same image
    (the plan fixes its seed and its batch), so executors change speed, never results."""

    plan: list[WorkItem]
    make_generator: Callable[[], Generator]
    spec: GenerateSpec
    images_dir: Path
    manifest: Path
    config: Config
    shard: tuple[int, int] = (0, 1)


class Executor(Protocol):
    """Decides who runs which items of a job: here, in other processes or on other nodes."""

    def __init__(self, spec: GenerateSpec) -> None: ...

    def run(self, job: GenerationJob, progress: bool = True) -> GenerationResult: ...


def generate_halving(generator: Generator, chunk: list[WorkItem]) -> list[Any]:
    """``generator.generate(chunk)``; on CUDA out-of-memory, the two halves one after the
    other, down to one image per call before giving up. Every item keeps its own seed, so the
    images are the same (up to the GPU's batch-size-dependent rounding)."""
    import torch

    try:
        images = generator.generate(chunk)
    except torch.cuda.OutOfMemoryError:
        if len(chunk) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(chunk) // 2
        log.warning("generate: out of GPU memory on %d images; trying %d", len(chunk), half)
        return generate_halving(generator, chunk[:half]) + generate_halving(generator, chunk[half:])
    if len(images) != len(chunk):
        raise RuntimeError(f"{generator.name} returned {len(images)} images for {len(chunk)} items")
    return list(images)


def open_shard(job: GenerationJob, manifest: Manifest) -> tuple[list[list[WorkItem]], set[str]]:
    """Ready shard ``job.shard`` for the writer that holds its manifest file: drop a torn last
    line, read which items are finished, delete temp files a killed writer left for the
    unfinished ones. Returns the shard's fixed batches and the finished item ids."""
    manifest.repair()
    done = finished_ids(manifest, job.plan, job.config, job.images_dir)
    batches = shard_chunks(chunks(job.plan, job.spec.batch_size), *job.shard)
    unfinished = [it for c in batches for it in c if it.item_id not in done]
    remove_stale_temp_files(
        job.images_dir, [image_relpath(it, job.spec.image_format) for it in unfinished]
    )
    return batches, done


def item_config(config: Config, item: WorkItem) -> str:
    """The settings fingerprint of one item: ``config`` itself, or for an ensemble (a mapping
    from member name) that of the item's member, so editing one member redoes only its items."""
    if isinstance(config, str):
        return config
    return config.get(str(item.params.get("generator", "")), "")


def finished_entries(
    manifest: Manifest, plan: list[WorkItem], config: Config, images_dir: Path | None = None
) -> dict[str, dict]:
    """Manifest entries (by item id) of items recorded with the seed and prompt the plan gives
    them now, made with the same generation settings (``config``, see :func:`item_config`) and
    whose image is still in ``images_dir`` (the run's ``images/`` by default) where the plan
    puts it: an image moved aside, deleted or in an old class folder is made again (one stat
    per finished item)."""
    if images_dir is None:
        images_dir = RunFolder(manifest.base.parent).images
    return entries_in_place(manifest.rows(), plan, config, images_dir)


def entries_in_place(
    rows: list[dict], plan: list[WorkItem], config: Config, images_dir: Path
) -> dict[str, dict]:
    """:func:`finished_entries` over manifest rows already read."""
    by_id = {it.item_id: it for it in plan}
    done: dict[str, dict] = {}
    for entry in rows:
        item = by_id.get(entry["item_id"])
        if (
            item
            and entry.get("seed") == item.seed
            and entry.get("prompt") == item.prompt
            and entry.get("config") == item_config(config, item)
        ):
            done[item.item_id] = entry
    return {
        item_id: entry
        for item_id, entry in done.items()
        if _in_place(entry.get("file_name"), by_id[item_id], images_dir)
    }


def _in_place(file_name: object, item: WorkItem, images_dir: Path) -> bool:
    """Is the recorded image where the plan puts the item now (its class folder, its id; the
    extension is part of the settings) and still there?"""
    if not isinstance(file_name, str) or "." not in file_name:
        return False
    stem = file_name.rsplit(".", 1)[0]
    return stem == f"{item.folder}/{item.item_id}" and (images_dir / file_name).is_file()


def finished_ids(
    manifest: Manifest, plan: list[WorkItem], config: Config, images_dir: Path | None = None
) -> set[str]:
    """Ids of the items :func:`finished_entries` finds."""
    return set(finished_entries(manifest, plan, config, images_dir))
