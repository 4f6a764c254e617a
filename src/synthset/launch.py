"""``synthset launch slurm``: the plan as a SLURM job array, submitted with submitit.

Three submissions, chained by SLURM dependencies:

1. **prepare** (one task, skipped when current): the stages every shard reads — classes,
   prompts, the adapted model, the plan;
2. **shards** (an array of ``slurm.tasks``): task i generates static shard i/n — whole plan
   batches, today's ``--shard`` contract with its per-shard lock, safe on a shared filesystem.
   With several GPUs per task, the task's processes share its shard through the lease queue.
   A task preempted or out of time checkpoints and requeues itself (submitit), then resumes its
   shard from the manifest;
3. **sweep** (after the array ends, however it ends): ``synthset run`` — finishes what any
   shard left, then curation, labels, exports, evaluation and the report.

Every image's seed comes from (recipe seed, item id) and its batch from the plan, so the images
are those of one process. ``--local`` runs the same jobs as processes on this machine
(submitit's local executor: no dependencies there, so the launcher waits between steps).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from synthset.errors import SynthsetError
from synthset.executors.slurm import LOCAL_ENV, Submitter, failures, require_sbatch
from synthset.pipeline import (
    is_current,
    open_run,
    run_all,
    run_stage,
    shard_prerequisites,
    stage,
    stage_generate,
)
from synthset.recipe import Recipe
from synthset.recipe.scale import SlurmSpec
from synthset.store.atomic import atomic_write_text

LOCAL_FIX = "or add --local to run the same jobs on this machine"


@dataclass
class PrepareTask(submitit.helpers.Checkpointable):
    """Job 1: the stages every shard reads (the adapted model, the plan)."""

    recipe: Recipe

    def __call__(self) -> list[str]:
        run = open_run(self.recipe)
        names = shard_prerequisites(self.recipe)
        for name in names:
            run_stage(name, self.recipe, run, progress=False)
        return names


@dataclass
class ShardTask(submitit.helpers.Checkpointable):
    """Array task ``index``: shard ``index`` of ``count``. ``checkpoint`` (inherited) resubmits
    the same call when SLURM preempts the task or its time runs out; the shard resumes from
    the manifest."""

    recipe: Recipe
    count: int
    workers: int = 1

    def __call__(self, index: int) -> dict[str, Any]:
        recipe = self.recipe
        if self.workers > 1:  # the task's GPUs share its shard through the lease queue,
            # on node-local disk (SQLite's locks fail on the NFS/Lustre the run folder is on)
            spec = recipe.generate
            assert spec is not None
            local = Path(os.environ.get("TMPDIR") or "/tmp") / f"synthset-queue-{os.getpid()}"
            generate = spec.model_copy(
                update={
                    "executor": "queue",
                    "workers": self.workers,
                    "queue_dir": spec.queue_dir or local,
                }
            )
            recipe = recipe.model_copy(update={"generate": generate})
        return stage_generate(recipe, open_run(recipe), shard=(index, self.count), progress=False)


@dataclass
class SweepTask(submitit.helpers.Checkpointable):
    """Job 3: every stage, the unfinished items of any shard first (``synthset run``)."""

    recipe: Recipe
    local: bool = False

    def __call__(self) -> str:
        if self.local:  # the evaluate stage's slurm trainings run here too
            os.environ[LOCAL_ENV] = "1"
        return str(run_all(self.recipe, progress=False).root)


@dataclass
class Launch:
    """The jobs one launch submitted (``None``: not needed) and what ended badly."""

    folder: Path
    prepare: submitit.Job | None
    shards: list[submitit.Job]
    sweep: submitit.Job | None
    problems: list[str] = field(default_factory=list)

    def job_ids(self) -> dict[str, Any]:
        return {
            "prepare": self.prepare.job_id if self.prepare else None,
            "shards": [j.job_id for j in self.shards],
            "sweep": self.sweep.job_id if self.sweep else None,
        }


def launch_slurm(recipe: Recipe, local: bool = False, wait: bool = False) -> Launch:
    """Submit prepare (when needed), the shard array and the sweep. With ``local`` the jobs
    run here, one after another step (no SLURM dependencies): it waits for each. ``wait``
    blocks on SLURM too, until the last job ends."""
    spec = recipe.slurm or SlurmSpec()
    if recipe.generate is None:
        raise SynthsetError("launch slurm: the recipe has no 'generate' section; add one")
    if not local:
        require_sbatch("launch slurm", LOCAL_FIX)
    run = open_run(recipe)
    folder = run.root / "slurm"
    submitter = Submitter(spec, folder, local, "launch slurm", LOCAL_FIX)
    problems: list[str] = []
    prepare = None
    if not all(is_current(stage(n), recipe, run) for n in shard_prerequisites(recipe)):
        prepare = submitter.submit("synthset-prepare", PrepareTask(recipe))
        if local and (failed := failures([prepare])):
            raise SynthsetError(f"launch: the prepare job failed: {failed[0]}")
    workers = max(1, spec.gpus_per_task)
    after = None if local or prepare is None else ("afterok", [prepare])
    shards = submitter.map_array(
        "synthset-shard", ShardTask(recipe, spec.tasks, workers), list(range(spec.tasks)), after
    )
    sweep = None
    if spec.sweep:
        if local:
            problems += failures(shards)
        sweep = submitter.submit(
            "synthset-sweep", SweepTask(recipe, local), None if local else ("afterany", shards)
        )
    launch = Launch(folder, prepare, shards, sweep, problems)
    atomic_write_text(
        folder / "launch.json",
        json.dumps({"submitted": time.time(), "local": local, **launch.job_ids()}, indent=1),
    )
    if wait or local:
        if sweep is not None and (failed := failures([sweep])):
            raise SynthsetError(f"launch: the sweep job failed: {failed[0]}")
        if sweep is None:
            launch.problems += failures(shards)
    return launch
