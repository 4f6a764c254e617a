"""The Ray executor (``generate.executor: ray``): Ray Data maps the shard's unfinished plan
batches over generator actors (``map_batches`` with one actor per GPU, ``generate.ray``).

Each actor loads the generator once, generates whole plan batches (so every image is the one
a single process makes) and writes them into the run folder, which every node must see (a
shared filesystem). The driver, alone, appends the returned rows to the manifest, so an item is
recorded once however often Ray runs its batch: a dead actor is restarted and its task retried
by Ray itself, and an image its first attempt wrote is rewritten with the same bytes. A batch
whose generator keeps raising is tried ``generate.max_attempts`` times inside its actor, then
reported as failed; the rest of the plan completes and the run ends with a one-line error.
Kill the driver and a rerun resumes from the manifest.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm.auto import tqdm

from synthset.errors import SynthsetError, first_line, storage_error
from synthset.executors.base import GenerationJob, GenerationResult, generate_halving, open_shard
from synthset.executors.local import store_batch
from synthset.generators.base import Generator, side_files
from synthset.plan import WorkItem
from synthset.recipe import GenerateSpec
from synthset.recipe.scale import RayClusterSpec
from synthset.store.locks import writer_lease
from synthset.store.manifest import Manifest

log = logging.getLogger(__name__)


class BatchWorker:
    """A Ray Data actor: generates plan batches and writes their images. Its input rows name a
    batch (its index among the shard's batches) and the ids still to write; it returns one row
    per written item (``row``: the manifest row as JSON) or per failed batch (``failed``).
    Ray runs two calls at once on each actor: while one writes its images, the other uses the
    model (a lock keeps the model to one call at a time)."""

    def __init__(self, job: GenerationJob, batches: list[list[WorkItem]]) -> None:
        self.job = job
        self.batches = batches
        self.generator: Generator | None = None
        self.model = threading.Lock()

    def __call__(self, rows: dict[str, Any]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"row": [], "failed": []}
        for idx, todo in zip(rows["batch"], rows["todo"], strict=True):
            error = ""
            for _ in range(self.job.spec.max_attempts):
                try:
                    written = self._batch(int(idx), set(json.loads(todo)))
                except SynthsetError:  # a setting, not this batch, is wrong: stop the run
                    raise
                except Exception as exc:  # noqa: BLE001 - retried, then reported as failed
                    if (storage := storage_error(exc)) is not None:  # no retry frees the disk
                        raise storage from None
                    error = f"batch {int(idx)}: {type(exc).__name__}: {first_line(exc)}"
                    continue
                out["row"] += [json.dumps(r) for r in written]
                out["failed"].extend([""] * len(written))
                break
            else:
                out["row"].append("")
                out["failed"].append(error)
        return out

    def _batch(self, idx: int, pending: set[str]) -> list[dict]:
        chunk = self.batches[idx]
        with self.model:
            if self.generator is None:
                self.generator = self.job.make_generator()
            images = generate_halving(self.generator, chunk)
            sides = [side_files(self.generator, it) for it in chunk]
        return store_batch(self.job, self.generator, chunk, images, sides, pending)


def actor_resources(ray_spec: RayClusterSpec, gpus_here: int) -> dict[str, Any]:
    """``map_batches`` resources of one actor: ``num_gpus`` as given, else one GPU when the
    driver sees any (the usual one-actor-per-GPU layout), else none. Ray Data restarts a dead
    actor and reruns its task without limit by default; that stays."""
    gpus = ray_spec.num_gpus if ray_spec.num_gpus is not None else (1 if gpus_here else 0)
    return {"num_cpus": ray_spec.num_cpus, "num_gpus": gpus}


#: Tries to join through Ray Client when the server reports an initialization failure.
CLIENT_ATTEMPTS = 3


@contextmanager
def ray_cluster(
    ray_spec: RayClusterSpec, progress: bool, field: str = "generate.ray.address"
) -> Iterator[None]:
    """Join the cluster ``ray_spec.address`` (the recipe's ``field``) names, or start a local
    one, for the block; a cluster this process started stops with it."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = ray_spec.address or os.environ.get("RAY_ADDRESS") or "local"
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=progress,
                logging_level=logging.WARNING,
                configure_logging=True,
            )
            break
        except (ConnectionError, RuntimeError, ValueError) as exc:
            # a busy head's Ray Client server may fail to start this client's server in time
            if "Initialization failure" in str(exc) and attempt < CLIENT_ATTEMPTS:
                time.sleep(5 * attempt)
                continue
            raise SynthsetError(
                f"{field} {address!r}: cannot join that Ray cluster "
                f"({first_line(exc)}); start one with 'ray start --head' or set the address"
            ) from None
    try:
        yield
    finally:
        ray.shutdown()


class RayExecutor:
    """Runs the shard's batches on a Ray cluster (``generate.executor: ray``)."""

    def __init__(self, spec: GenerateSpec) -> None:
        self.spec = spec

    def run(self, job: GenerationJob, progress: bool = True) -> GenerationResult:
        spec = self.spec
        address = spec.ray.address or os.environ.get("RAY_ADDRESS") or ""
        if address.startswith("ray://"):
            raise SynthsetError(
                f"generate.ray.address {address!r}: Ray Data does not run through Ray Client "
                "(ray://); run synthset on a node of the cluster (e.g. with 'ray job submit') "
                "and set the address to auto or host:6379"
            )
        root = job.images_dir.parent
        manifest = Manifest(job.manifest, job.shard)
        with writer_lease(root, job.shard), manifest.exclusive():
            start = time.perf_counter()
            mine, done = open_shard(job, manifest)
            n_shard = sum(len(c) for c in mine)
            todo = [
                (i, [it.item_id for it in c if it.item_id not in done]) for i, c in enumerate(mine)
            ]
            todo = [(i, ids) for i, ids in todo if ids]
            n_todo = sum(len(ids) for _, ids in todo)
            if not todo:
                return GenerationResult(0, n_shard, n_shard, time.perf_counter() - start)
            with ray_cluster(spec.ray, progress):
                generated, failures = self._map(job, mine, todo, manifest, n_todo, progress)
        if failures:
            raise SynthsetError(
                f"generate: {len(failures)} batch(es) failed {spec.max_attempts} times (first: "
                f"{failures[0]}); every other batch is done. Fix the cause and run "
                "'synthset generate' again"
            )
        return GenerationResult(generated, n_shard - n_todo, n_shard, time.perf_counter() - start)

    def _map(
        self,
        job: GenerationJob,
        mine: list[list[WorkItem]],
        todo: list[tuple[int, list[str]]],
        manifest: Manifest,
        n_todo: int,
        progress: bool,
    ) -> tuple[int, list[str]]:
        """Map the batches over the actors; append each returned row once. Returns how many
        items were recorded and the failed batches' errors."""
        import ray
        import torch

        logging.getLogger("ray.data").setLevel(logging.ERROR)  # synthset's bar counts images
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # synthset's own bar counts images
        context.print_on_execution_start = False
        rows = ray.data.from_items(
            [{"batch": i, "todo": json.dumps(ids)} for i, ids in todo],
            override_num_blocks=len(todo),
        )
        resources = actor_resources(self.spec.ray, torch.cuda.device_count())
        out = rows.map_batches(
            BatchWorker,
            fn_constructor_args=(job, mine),
            batch_size=self.spec.ray.batches_per_task,
            compute=ray.data.ActorPoolStrategy(  # two calls per actor: one writes, one generates
                size=self.spec.ray.concurrency,
                max_concurrent_calls_per_actor=2,
                enable_true_multi_threading=True,
            ),
            **resources,
        )
        recorded: set[str] = set()
        failures: list[str] = []
        bar = tqdm(total=n_todo, desc="generate", unit="img", disable=not progress)
        try:
            for block in out.iter_batches(batch_size=None, batch_format="numpy"):
                failures += [str(f) for f in block["failed"] if f]
                rows = [json.loads(r) for r in block["row"] if r]
                new = [r for r in rows if r["item_id"] not in recorded]  # a rerun task's rows
                manifest.extend(new)  # one write, one fsync per returned block
                recorded.update(r["item_id"] for r in new)
                bar.update(len(new))
        except Exception as exc:
            cause = user_error(exc)
            if isinstance(cause, SynthsetError):
                raise cause from None
            raise
        finally:
            bar.close()
        return len(recorded), failures


def user_error(exc: BaseException) -> BaseException:
    """The exception an actor raised, out of Ray's wrappers around it."""
    cause = getattr(exc, "cause", None) or exc.__cause__
    seen = 0
    while cause is not None and seen < 8:
        if isinstance(cause, SynthsetError):
            return cause
        cause = getattr(cause, "cause", None) or cause.__cause__
        seen += 1
    return exc
