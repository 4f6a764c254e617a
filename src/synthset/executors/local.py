"""The shard worker every executor runs, and the local executor that runs it in this process:
the model works on the next batch while a thread pool encodes and writes the previous one, so
PNG encoding never stalls the model."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from synthset.executors.base import (
    Config,
    GenerationJob,
    GenerationResult,
    generate_halving,
    item_config,
    open_shard,
)
from synthset.generators.base import Generator, SideFile, resize_for_saving, side_files
from synthset.plan import WorkItem, image_relpath
from synthset.recipe import GenerateSpec
from synthset.store.atomic import atomic_write_bytes
from synthset.store.imagefolder import (
    encode_image,
    side_path,
    write_image,
)
from synthset.store.locks import writer_lease
from synthset.store.manifest import Manifest


def run_generation(
    plan: list[WorkItem],
    make_generator: Callable[[], Generator],
    spec: GenerateSpec,
    images_dir: Path,
    manifest: Manifest,
    config: Config,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> GenerationResult:
    """Generate every unfinished item of this shard; finished items are never redone.
    ``config`` fingerprints the generation settings and is recorded with every item. The run
    folder takes writers of one shard layout at a time (see ``store.locks.writer_lease``), and
    one process at a time may write a manifest file (see ``Manifest.exclusive``)."""
    job = GenerationJob(plan, make_generator, spec, images_dir, manifest.base, config, shard)
    with writer_lease(manifest.base.parent, shard), manifest.exclusive():
        start = time.perf_counter()
        batches, done = open_shard(job, manifest)
        todo = [c for c in batches if any(it.item_id not in done for it in c)]
        n_shard = sum(len(c) for c in batches)
        n_todo = sum(1 for c in todo for it in c if it.item_id not in done)
        if not todo:
            return GenerationResult(0, n_shard, n_shard, time.perf_counter() - start)

        generator = make_generator()
        bar = tqdm(total=n_todo, desc="generate", unit="img", disable=not progress)
        commits: deque[Future[None]] = deque()

        def commit(stored: list[Future[dict]]) -> None:
            rows = [f.result() for f in stored]
            manifest.extend(rows)  # one write and one fsync per batch
            bar.update(len(rows))

        # writer threads encode and write images while the model makes the next batch; one
        # committer records each batch's rows once they are all written, in plan order
        with (
            ThreadPoolExecutor(spec.writer_threads, thread_name_prefix="writer") as pool,
            ThreadPoolExecutor(1, thread_name_prefix="commit") as committer,
        ):
            try:
                for chunk in todo:
                    images = generate_halving(generator, chunk)
                    stored: list[Future[dict]] = []
                    for item, image in zip(chunk, images, strict=True):
                        sides = side_files(generator, item)  # every item: recorders keep state
                        if item.item_id not in done:
                            stored.append(
                                pool.submit(
                                    store_item,
                                    spec,
                                    images_dir,
                                    generator,
                                    config,
                                    item,
                                    image,
                                    sides,
                                )
                            )
                    commits.append(committer.submit(commit, stored))
                    while len(commits) > 2:  # at most two batches in flight behind the model
                        commits.popleft().result()
                while commits:
                    commits.popleft().result()
            finally:
                bar.close()
        return GenerationResult(n_todo, n_shard - n_todo, n_shard, time.perf_counter() - start)


def store_batch(
    job: GenerationJob,
    generator: Generator,
    chunk: list[WorkItem],
    images: list[Image.Image],
    sides: list[list[SideFile]],
    pending: set[str],
) -> list[dict]:
    """Write a generated batch's ``pending`` items (``writer_threads`` at a time); returns
    their manifest rows, for the caller to record."""
    spec = job.spec
    with ThreadPoolExecutor(max_workers=spec.writer_threads) as pool:
        futures = [
            pool.submit(store_item, spec, job.images_dir, generator, job.config, it, img, side)
            for it, img, side in zip(chunk, images, sides, strict=True)
            if it.item_id in pending
        ]
        return [f.result() for f in futures]


def store_item(
    spec: GenerateSpec,
    images_dir: Path,
    generator: Generator,
    config: Config,
    item: WorkItem,
    image: Image.Image,
    sides: list[SideFile],
) -> dict:
    """Write one finished item's side files, then its image (each atomically); returns the
    manifest row that records it done (the caller appends it: last)."""
    image = resize_for_saving(image, spec.member_of(item.params.get("generator")).save_size)
    relpath = image_relpath(item, spec.image_format)
    for side in sides:  # first: a finished item always has its side files
        atomic_write_bytes(
            side_path(images_dir.parent, side.folder, relpath, side.suffix), side.data
        )
    write_image(images_dir, relpath, encode_image(image, spec.image_format, spec.jpeg_quality))
    name_of = getattr(generator, "name_of", None)
    name = name_of(item) if name_of else generator.name
    return {**_entry(item, relpath), "generator": name, "config": item_config(config, item)}


#: The item params each manifest row records: the real image a variant or an inversion sample
#: comes from, its strength, and an inversion sample's partner image and λ.
MANIFEST_PARAMS = (
    "image",
    "strength",
    "variant",
    "source_image",
    "partner_image",
    "lambda",
)


def _entry(item: WorkItem, relpath: str) -> dict:
    return {
        "item_id": item.item_id,
        "class_id": item.class_id,
        "class_name": item.class_name,
        "file_name": relpath,
        "prompt": item.prompt,
        "seed": item.seed,
        "mode": item.mode,
        **{k: item.params[k] for k in MANIFEST_PARAMS if k in item.params},
    }


class LocalExecutor:
    """Runs the job's shard in this process (``generate.executor: local``)."""

    def __init__(self, spec: GenerateSpec) -> None:
        self.spec = spec

    def run(self, job: GenerationJob, progress: bool = True) -> GenerationResult:
        manifest = Manifest(job.manifest, job.shard)
        return run_generation(
            job.plan,
            job.make_generator,
            job.spec,
            job.images_dir,
            manifest,
            job.config,
            shard=job.shard,
            progress=progress,
        )
