"""Where the evaluate stage's trainings run (``evaluate.executor``): worker processes on this
machine, Ray tasks, or a SLURM job array. Each training is a self-contained
:class:`~synthset.evaluate.jobs.TrainingJob`; the runners below hand each finished one back to
this process, which saves it at once, so nothing finished is lost when anything is killed.

- ``local`` with ``workers: N`` — N spawned processes (one GPU each when there are several);
  a worker killed mid-training breaks the pool: a new pool retrains what had not finished.
- ``ray`` — one Ray task per training (``evaluate.ray``: cluster, CPUs and GPUs per task); Ray
  reruns a task whose worker died.
- ``slurm`` — one array task per training with the recipe's ``slurm`` settings (submitit); a
  preempted or timed-out task requeues and trains again.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from tqdm.auto import tqdm

from synthset.errors import first_line
from synthset.evaluate.jobs import Done, TrainingJob, TrainingRunner, run_training
from synthset.executors.queue import gpu_count, visible_devices
from synthset.executors.ray_data import actor_resources, ray_cluster, user_error
from synthset.executors.slurm import Submitter, local_by_environment, require_sbatch
from synthset.recipe import EvaluateSpec
from synthset.recipe.scale import SlurmSpec
from synthset.registry import Registry

#: How often a pool of training processes may break (a worker killed) before giving up.
MAX_POOL_BREAKS = 3
#: How often Ray reruns a training whose worker process died.
RAY_RETRIES = 3


def _progress(jobs: list[TrainingJob], progress: bool) -> Any:
    return tqdm(total=len(jobs), desc="CAS trainings", unit="run", disable=not progress)


# ----------------------------------------------------------------------------- processes


def _exit_with_parent(parent: int) -> None:
    """End this worker once the process that started it is gone (a SIGKILLed driver cannot
    stop its pool, and a worker waiting on the pool's queue would wait forever)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _start_worker(counter: Any, devices: list[str], threads: int) -> None:
    """A new training process: its own GPU (round robin), its share of the CPU threads; it
    exits when the driver dies."""
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[index % len(devices)]
    import torch

    torch.set_num_threads(threads)


class ProcessRunner:
    """``evaluate.executor: local`` with ``workers`` above one: a pool of spawned processes."""

    def __init__(self, spec: EvaluateSpec, slurm: SlurmSpec | None, folder: Path) -> None:
        self.workers = spec.workers

    def __call__(self, jobs: list[TrainingJob], done: Done, progress: bool) -> list[str]:
        pending = list(jobs)
        failures: list[str] = []
        bar = _progress(jobs, progress)
        breaks = 0
        while pending and breaks <= MAX_POOL_BREAKS:
            broken = self._pool(pending, done, failures, bar)
            finished = {(f.label, f.seed) for f in broken[1]}
            pending = [j for j in pending if (j.label, j.seed) not in finished]
            breaks += broken[0]
        bar.close()
        failures += [f"{j.name}: its training process died {breaks} times" for j in pending]
        return failures

    def _pool(
        self, jobs: list[TrainingJob], done: Done, failures: list[str], bar: Any
    ) -> tuple[int, list[TrainingJob]]:
        """One pool over ``jobs``: (1 if a worker died, else 0; the jobs it settled)."""
        context = multiprocessing.get_context("spawn")
        devices = visible_devices(dict(os.environ), gpu_count())
        workers = min(self.workers, len(jobs))
        threads = 1 if devices else max(1, (os.cpu_count() or 1) // workers)
        settled: list[TrainingJob] = []
        died = 0
        with ProcessPoolExecutor(
            workers,
            mp_context=context,
            initializer=_start_worker,
            initargs=(context.Value("i", 0), devices, threads),
        ) as pool:
            futures: dict[Future[dict[str, Any]], TrainingJob] = {
                pool.submit(run_training, job): job for job in jobs
            }
            for future in as_completed(futures):
                job = futures[future]
                try:
                    result = future.result()
                except BrokenProcessPool:
                    died = 1  # unsettled: the next pool trains it again
                    continue
                except Exception as exc:  # noqa: BLE001 - one line per failed training
                    failures.append(f"{job.name}: {first_line(exc)}")
                else:
                    done(job, result)
                settled.append(job)
                bar.update()
        return died, settled


# ----------------------------------------------------------------------------- ray


def _train_on_ray(job: TrainingJob) -> dict[str, Any]:
    return run_training(job)


class RayRunner:
    """``evaluate.executor: ray``: one Ray task per training."""

    def __init__(self, spec: EvaluateSpec, slurm: SlurmSpec | None, folder: Path) -> None:
        self.ray = spec.ray

    def __call__(self, jobs: list[TrainingJob], done: Done, progress: bool) -> list[str]:
        import ray

        failures: list[str] = []
        with ray_cluster(self.ray, progress, "evaluate.ray.address"):
            resources = actor_resources(self.ray, gpu_count())
            task = ray.remote(_train_on_ray).options(**resources, max_retries=RAY_RETRIES)
            refs = {task.remote(job): job for job in jobs}
            bar = _progress(jobs, progress)
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    job = refs.pop(ref)
                    try:
                        done(job, ray.get(ref))
                    except ray.exceptions.RayError as exc:
                        failures.append(f"{job.name}: {first_line(user_error(exc))}")
                    bar.update()
            bar.close()
        return failures


# ----------------------------------------------------------------------------- slurm


@dataclass
class TrainingTask(submitit.helpers.Checkpointable):
    """An array task: one training. Preempted or out of time, it requeues and trains again."""

    def __call__(self, job: TrainingJob) -> dict[str, Any]:
        return run_training(job)


class SlurmRunner:
    """``evaluate.executor: slurm``: one SLURM array task per training (submitit), each with
    the recipe's ``slurm`` resources; this process waits for them."""

    FIX = "or set evaluate.executor to local or ray"

    def __init__(self, spec: EvaluateSpec, slurm: SlurmSpec | None, folder: Path) -> None:
        self.slurm = slurm or SlurmSpec()
        self.folder = folder

    def __call__(self, jobs: list[TrainingJob], done: Done, progress: bool) -> list[str]:
        local = local_by_environment()
        if not local:
            require_sbatch("evaluate.executor slurm", self.FIX)
        submitter = Submitter(self.slurm, self.folder, local, "evaluate.executor slurm", self.FIX)
        array = submitter.map_array("synthset-cas", TrainingTask(), jobs)
        failures: list[str] = []
        bar = _progress(jobs, progress)
        for job, submitted in zip(jobs, array, strict=True):
            try:
                result = submitted.result()
            except Exception as exc:  # noqa: BLE001 - one line per failed training
                failures.append(f"{job.name} (job {submitted.job_id}): {first_line(exc)}")
            else:
                done(job, result)
            bar.update()
        bar.close()
        return failures


RUNNERS: Registry[type[TrainingRunner]] = Registry(
    "evaluate.executor",
    {
        "local": "synthset.executors.trainings:ProcessRunner",
        "ray": "synthset.executors.trainings:RayRunner",
        "slurm": "synthset.executors.trainings:SlurmRunner",
    },
)


def build_training_runner(
    spec: EvaluateSpec, slurm: SlurmSpec | None, folder: Path
) -> TrainingRunner | None:
    """The runner of ``evaluate.executor``; None (train here, one after another) for ``local``
    with one worker. ``folder``: where SLURM jobs keep their logs."""
    if spec.executor == "local" and spec.workers <= 1:
        return None
    return RUNNERS.load(spec.executor)(spec, slurm, folder)  # type: ignore[call-arg]
