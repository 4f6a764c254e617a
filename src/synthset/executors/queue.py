"""The queue executor (``generate.executor: queue``): any number of processes on one node share
a shard's fixed batches through the lease queue in the run folder (``store/queue.py``).

Each worker claims a batch, renews its lease while the model works, writes the images (and side
files), then appends the batch's manifest rows inside the queue transaction that checks the
lease is still its own. A SIGKILLed worker's lease runs out and another worker takes the batch;
items a dead worker had already recorded are skipped, so every item is recorded once, and the
images are byte-identical to a single process (the batch fixes every image). A batch whose
generator keeps raising is set aside as failed after ``generate.max_attempts``; the rest of the
plan completes, and ``synthset generate --retry-failed`` tries those again.

``generate.workers: N`` makes this ``synthset generate`` start N-1 more processes on the same
run, one GPU each when the node has N (any other ``synthset generate`` with the queue executor
may join too).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from synthset.errors import SynthsetError, first_line, storage_error
from synthset.executors.base import (
    Config,
    GenerationJob,
    GenerationResult,
    entries_in_place,
    generate_halving,
    item_config,
)
from synthset.executors.local import store_batch
from synthset.generators.base import Generator, SideFile, side_files
from synthset.plan import WorkItem, chunks, shard_chunks
from synthset.recipe import GenerateSpec
from synthset.store.locks import queue_worker_lease
from synthset.store.manifest import Manifest
from synthset.store.queue import LeaseQueue, worker_name

log = logging.getLogger(__name__)

#: Set in the processes a queue executor starts, so they work instead of starting more.
HELPER_ENV = "SYNTHSET_QUEUE_HELPER"


def queue_folder(root: Path, spec: GenerateSpec) -> Path:
    """Where the run's queue databases live: ``generate.queue_dir`` or the run's ``queue/``."""
    return Path(spec.queue_dir) if spec.queue_dir is not None else Path(root) / "queue"


def queue_path(root: Path, shard: tuple[int, int], spec: GenerateSpec) -> Path:
    """The queue database of one shard of the run in ``root``."""
    return queue_folder(root, spec) / f"shard{shard[0]}of{shard[1]}.sqlite"


def retry_failed(root: Path, shard: tuple[int, int], spec: GenerateSpec) -> int:
    """Put the shard's failed batches back in line; how many there were."""
    path = queue_path(root, shard, spec)
    if not path.exists():
        return 0
    queue = LeaseQueue(path)
    try:
        return queue.retry_failed()
    finally:
        queue.close()


def _digest(chunk: list[WorkItem], config: Config) -> str:
    """What a batch holds: its items, seeds, prompts and settings."""
    h = hashlib.sha256()
    for it in chunk:
        h.update(f"{it.item_id}\0{it.seed}\0{it.prompt}\0{item_config(config, it)}\n".encode())
    return h.hexdigest()[:16]


class _Lease:
    """Renews this worker's lease on batch ``idx`` every third of a lease from its creation
    until ``stop`` (its own connection: a SQLite connection stays in its thread). The batch
    stays leased until it is recorded, which may be after the model moved on to the next one."""

    def __init__(self, path: Path, idx: int, worker: str, lease_s: float) -> None:
        self.path, self.idx, self.worker, self.lease_s = path, idx, worker, lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        queue = LeaseQueue(self.path, lease_s=self.lease_s)
        try:
            while not self._stop.wait(self.lease_s / 3):
                queue.renew(self.idx, self.worker)
        finally:
            queue.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _Recorded:
    """Item ids the manifest files record with the plan's seed, prompt and settings, kept up to
    date by reading only the bytes appended since the last look."""

    def __init__(self, job: GenerationJob) -> None:
        self.job = job
        self.by_id = {it.item_id: it for it in job.plan}
        self.reader = Manifest(job.manifest)
        rows = self.reader.new_rows()  # every row, read once; later calls read only new bytes
        self.ids = set(entries_in_place(rows, job.plan, job.config, job.images_dir))
        self.lock = threading.Lock()  # the model's thread and the committer's both read it

    def refresh(self) -> set[str]:
        """The recorded ids, now (hold ``lock`` while using them)."""
        for row in self.reader.new_rows():
            item = self.by_id.get(row["item_id"])
            if (
                item is not None
                and row.get("seed") == item.seed
                and row.get("prompt") == item.prompt
                and row.get("config") == item_config(self.job.config, item)
            ):
                self.ids.add(item.item_id)
        return self.ids


def run_queue_worker(job: GenerationJob, progress: bool = True) -> GenerationResult:
    """Work on the shard's queue until no batch is waiting or leased."""
    spec: GenerateSpec = job.spec
    start = time.perf_counter()
    root = job.images_dir.parent
    mine = shard_chunks(chunks(job.plan, spec.batch_size), *job.shard)
    n_shard = sum(len(c) for c in mine)
    path = queue_path(root, job.shard, spec)
    queue = LeaseQueue(path, spec.lease_seconds, spec.max_attempts)
    name = worker_name()
    generated = 0
    try:
        with queue_worker_lease(root, job.shard) as number:
            manifest = Manifest(job.manifest, job.shard, worker=number)
            with manifest.exclusive():
                manifest.repair()
                recorded = _Recorded(job)
                skipped = sum(it.item_id in recorded.ids for c in mine for it in c)
                finished = [
                    i for i, c in enumerate(mine) if all(it.item_id in recorded.ids for it in c)
                ]
                queue.sync([(i, _digest(c, job.config)) for i, c in enumerate(mine)], finished)
                bar = tqdm(
                    total=n_shard - skipped, desc="generate", unit="img", disable=not progress
                )
                generator: Generator | None = None
                committer = _Committer(job, mine, path, name, manifest, recorded)
                try:
                    while True:
                        idx = queue.claim(name)
                        if idx is None:
                            done_now = committer.wait()  # the batch in flight may be the last
                            generated += done_now
                            bar.update(done_now)
                            if queue.counts().leased == 0:
                                break
                            time.sleep(min(1.0, spec.lease_seconds / 10))
                            continue
                        if generator is None:
                            generator = job.make_generator()
                        done_now = _run_batch(job, queue, path, name, idx, generator, committer)
                        generated += done_now
                        bar.update(done_now)
                finally:
                    bar.close()
                    committer.close()
        failures = queue.failures()
    finally:
        queue.close()
    if failures:
        idx, error = failures[0]
        raise SynthsetError(
            f"generate: {len(failures)} batch(es) failed {spec.max_attempts} times (first: batch "
            f"{idx}: {error}); every other batch is done. Fix the cause and run "
            "'synthset generate --retry-failed'"
        )
    return GenerationResult(generated, skipped, n_shard, time.perf_counter() - start)


def _run_batch(
    job: GenerationJob,
    queue: LeaseQueue,
    path: Path,
    name: str,
    idx: int,
    generator: Generator,
    committer: _Committer,
) -> int:
    """Generate claimed batch ``idx`` and hand it to the committer, which writes and records
    it while the model makes the next one. Returns how many items the previous batch
    recorded."""
    spec = job.spec
    chunk = committer.batches[idx]
    lease = _Lease(path, idx, name, spec.lease_seconds)
    with committer.recorded.lock:
        pending = {it.item_id for it in chunk} - committer.recorded.refresh()
    images: list[Any] = []
    sides: list[list[SideFile]] = []
    if pending:
        try:
            images = generate_halving(generator, chunk)
            sides = [side_files(generator, it) for it in chunk]
        except SynthsetError as exc:  # a setting, not a batch, is wrong: stop here
            lease.stop()
            queue.fail(idx, name, first_line(exc))
            raise
        except Exception as exc:  # noqa: BLE001 - the batch fails, the run goes on
            lease.stop()
            state = queue.fail(idx, name, f"{type(exc).__name__}: {first_line(exc)}")
            log.warning("generate: batch %d failed (%s); %s", idx, first_line(exc), state)
            return 0
    try:
        return committer.submit(_Generated(idx, generator, images, sides, pending, lease))
    except BaseException:
        lease.stop()
        queue.release(idx, name)  # generated but not written: the next claimant redoes it
        raise


@dataclass(frozen=True)
class _Generated:
    """A batch the model made, waiting to be written and recorded under its lease."""

    idx: int
    generator: Generator
    images: list[Any]
    sides: list[list[SideFile]]
    pending: set[str]
    lease: _Lease


class _Committer:
    """One thread that writes a generated batch's images and records it in the queue (the
    manifest rows in the lease-checking transaction), one batch behind the model."""

    def __init__(
        self,
        job: GenerationJob,
        batches: list[list[WorkItem]],
        path: Path,
        name: str,
        manifest: Manifest,
        recorded: _Recorded,
    ) -> None:
        self.job, self.batches, self.path, self.name = job, batches, path, name
        self.manifest, self.recorded = manifest, recorded
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="commit")
        self.in_flight: Future[int] | None = None
        self.queue: LeaseQueue | None = None  # opened on the commit thread, used there only

    def submit(self, batch: _Generated) -> int:
        """Write and record ``batch`` in the background, after the batch before it; returns
        how many items that one recorded (its error, if it failed, is raised)."""
        done = self.wait()
        self.in_flight = self.pool.submit(self._commit, batch)
        return done

    def wait(self) -> int:
        """Block until the batch in flight is recorded; how many items it recorded."""
        future, self.in_flight = self.in_flight, None
        return 0 if future is None else future.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self.queue is not None:
                self.pool.submit(self.queue.close).result()
            self.pool.shutdown()

    def _commit(self, batch: _Generated) -> int:
        spec = self.job.spec
        if self.queue is None:
            self.queue = LeaseQueue(self.path, spec.lease_seconds, spec.max_attempts)
        idx = batch.idx
        chunk = self.batches[idx]
        try:
            rows = []
            if batch.pending:
                try:
                    rows = store_batch(
                        self.job, batch.generator, chunk, batch.images, batch.sides, batch.pending
                    )
                except Exception as exc:
                    if (error := storage_error(exc)) is not None:  # no retry frees the disk
                        self.queue.release(idx, self.name)
                        raise error from None
                    message = f"{type(exc).__name__}: {first_line(exc)}"
                    state = self.queue.fail(idx, self.name, message)
                    log.warning("generate: batch %d failed (%s); %s", idx, first_line(exc), state)
                    return 0

            def commit() -> None:
                with self.recorded.lock:
                    ids = self.recorded.refresh()
                    new = [r for r in rows if r["item_id"] not in ids]  # a killed worker's
                    self.manifest.extend(new)  # one write, one fsync per batch
                    ids.update(r["item_id"] for r in new)

            if not self.queue.complete(idx, self.name, commit):
                return 0  # the lease went to another worker, which records the batch
            return len(rows)
        finally:
            batch.lease.stop()


def helper_envs(workers: int, environ: dict[str, str], gpus: int) -> list[dict[str, str]]:
    """The environment of each of the ``workers - 1`` helpers: marked as helpers and, when
    there are at least ``workers`` GPUs (``CUDA_VISIBLE_DEVICES`` or ``gpus`` visible), one GPU
    each (this process keeps the first)."""
    devices = visible_devices(environ, gpus)
    envs = []
    for k in range(1, workers):
        env = {**environ, HELPER_ENV: "1"}
        if len(devices) >= workers:
            env["CUDA_VISIBLE_DEVICES"] = devices[k]
        envs.append(env)
    return envs


def visible_devices(environ: dict[str, str], gpus: int) -> list[str]:
    """The GPUs this process may hand out: ``CUDA_VISIBLE_DEVICES``, else ``0..gpus-1``."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [d.strip() for d in visible.split(",") if d.strip()]
    return [str(i) for i in range(gpus)]


def gpu_count() -> int:
    """CUDA devices this process sees."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class QueueExecutor:
    """Shares the shard's batches among processes on this node (``generate.executor: queue``)."""

    def __init__(self, spec: GenerateSpec) -> None:
        self.spec = spec

    def _start_helpers(self, job: GenerationJob) -> list[subprocess.Popen[bytes]]:
        root = job.images_dir.parent
        recipe = root / "recipe.yaml"
        if self.spec.workers <= 1 or os.environ.get(HELPER_ENV) or not recipe.exists():
            return []
        shard = f"{job.shard[0]}/{job.shard[1]}"
        cmd = [sys.executable, "-m", "synthset.cli", "generate", str(recipe), "--out", str(root)]
        cmd += ["--shard", shard, "-q", "--executor", "queue", "--workers", "1"]
        if self.spec.queue_dir is not None:
            cmd += ["--set", f"generate.queue_dir={self.spec.queue_dir}"]
        envs = helper_envs(self.spec.workers, dict(os.environ), gpu_count())
        return [subprocess.Popen(cmd, env=env) for env in envs]

    def run(self, job: GenerationJob, progress: bool = True) -> GenerationResult:
        helpers = self._start_helpers(job)
        try:
            result = run_queue_worker(job, progress)
        finally:
            codes = [p.wait() for p in helpers]
        failed = [c for c in codes if c != 0]
        if failed:  # their batches went to the others when their leases ran out: all is done
            log.warning(
                "generate: %d of %d helper processes exited with %s; their batches were redone",
                len(failed),
                len(helpers),
                sorted(set(failed)),
            )
        return result
