"""submitit with a recipe's ``slurm:`` settings: what ``synthset launch slurm`` and the
evaluate stage's ``executor: slurm`` submit through.

``local=True`` (``launch slurm --local``, or ``SYNTHSET_SUBMITIT_LOCAL=1`` in the environment,
which ``--local`` sets inside its jobs) runs the same jobs as processes on this machine with
submitit's local executor; SLURM dependencies do not exist there."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import submitit

from synthset.errors import SynthsetError, first_line
from synthset.recipe.scale import SlurmSpec

LOCAL_ENV = "SYNTHSET_SUBMITIT_LOCAL"


def local_by_environment() -> bool:
    """Does this process submit SLURM jobs as local processes (``SYNTHSET_SUBMITIT_LOCAL=1``)?"""
    return os.environ.get(LOCAL_ENV, "") not in ("", "0")


def require_sbatch(what: str, fix: str) -> None:
    """One-line error when this machine cannot submit to SLURM."""
    if shutil.which("sbatch") is None:
        raise SynthsetError(f"{what}: sbatch is not on PATH: run it on a SLURM login node, {fix}")


class Submitter:
    """submitit's executor with the recipe's SLURM settings (``local``: processes here); each
    submission may wait on earlier ones through SLURM dependencies. ``what`` and ``fix`` word
    the one-line error when submitting fails."""

    def __init__(self, spec: SlurmSpec, folder: Path, local: bool, what: str, fix: str) -> None:
        self.spec, self.local, self.what, self.fix = spec, local, what, fix
        cluster = "local" if local else "slurm"
        kwargs = {} if local else {"slurm_max_num_timeout": spec.max_requeues}
        self.executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster, **kwargs)
        self.executor.update_parameters(
            timeout_min=spec.time_minutes,
            tasks_per_node=1,
            nodes=1,
            gpus_per_node=spec.gpus_per_task,
            cpus_per_task=spec.cpus_per_task,
            **({"mem_gb": spec.mem_gb} if spec.mem_gb else {}),
        )
        if not local:
            self.executor.update_parameters(
                slurm_partition=spec.partition,
                slurm_array_parallelism=spec.array_parallelism,
                slurm_setup=list(spec.setup),
            )

    def _before(self, name: str, after: tuple[str, list[submitit.Job]] | None) -> None:
        extra: dict[str, Any] = dict(self.spec.sbatch)
        if after is not None and after[1]:
            ids = sorted({str(j.job_id).split("_")[0] for j in after[1]})
            extra["dependency"] = f"{after[0]}:{':'.join(ids)}"
        self.executor.update_parameters(name=name)
        if not self.local:
            self.executor.update_parameters(slurm_additional_parameters=extra)

    def submit(self, name: str, task: Any, after: Any = None) -> submitit.Job:
        self._before(name, after)
        return self._submitting(lambda: self.executor.submit(task))

    def map_array(
        self, name: str, task: Callable[..., Any], args: Sequence[Any], after: Any = None
    ) -> list[submitit.Job]:
        self._before(name, after)
        return self._submitting(lambda: self.executor.map_array(task, list(args)))

    def _submitting(self, submit: Callable[[], Any]) -> Any:
        """Run a submission; a machine without SLURM is a one-line error."""
        try:
            return submit()
        except FileNotFoundError as exc:
            raise SynthsetError(
                f"{self.what}: cannot submit ({first_line(exc)}): run it on a SLURM login node "
                f"(sbatch on PATH), {self.fix}"
            ) from None
        except subprocess.CalledProcessError as exc:
            raise SynthsetError(
                f"{self.what}: sbatch refused the job ({first_line(exc)}); check "
                "slurm.partition, slurm.sbatch and the time limit in the recipe"
            ) from None


def failures(jobs: list[submitit.Job]) -> list[str]:
    """Wait for ``jobs``; one line per job that raised."""
    problems = []
    for job in jobs:
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            problems.append(f"job {job.job_id}: {first_line(exc)}")
    return problems
