"""Where the plan runs past one process: the Ray executor's settings (``generate.ray``) and the
SLURM job array ``synthset launch slurm`` submits (``slurm``). Neither changes any image, so
neither is part of a fingerprint."""

from __future__ import annotations

from pydantic import Field, field_validator

from synthset.recipe.base import Strict


class RayClusterSpec(Strict):
    """A Ray cluster to run on and what each Ray worker (actor or task) asks of it."""

    address: str | None = Field(
        None,
        description="The cluster to join: 'auto' (the one this node belongs to), 'host:port', "
        "'ray://host:10001' (Ray Client: evaluate only; Ray Data needs its driver on the "
        "cluster), or 'local' (start one here). Default: RAY_ADDRESS "
        "when set, else a local one.",
    )
    num_gpus: float | None = Field(
        None,
        ge=0,
        description="GPUs per worker (default: 1 when the driver sees a GPU, else 0).",
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs per worker.")


class RaySpec(RayClusterSpec):
    """``generate.executor: ray``: Ray Data maps the plan's batches over generator actors."""

    concurrency: int = Field(
        1, ge=1, le=4096, description="Generator actors (each loads the model once)."
    )
    batches_per_task: int = Field(
        1,
        ge=1,
        le=1024,
        description="Plan batches per Ray task (more: less scheduling, more redone on a crash).",
    )


class SlurmSpec(Strict):
    """``synthset launch slurm``: a job array of static shards, submitted with submitit."""

    tasks: int = Field(
        4, ge=1, le=100_000, description="Array tasks; task i runs shard i of this many."
    )
    partition: str | None = Field(None, description="sbatch --partition.")
    gpus_per_task: int = Field(
        1,
        ge=0,
        le=64,
        description="GPUs per array task; with more than one, they share the "
        "task's shard through the queue executor.",
    )
    cpus_per_task: int = Field(8, ge=1, le=1024, description="sbatch --cpus-per-task.")
    mem_gb: float | None = Field(
        None, gt=0, description="sbatch --mem in GB (default: the partition's)."
    )
    time_minutes: int = Field(
        240,
        ge=1,
        description="Time limit of one task; a task that reaches it requeues and "
        "resumes its shard.",
    )
    array_parallelism: int = Field(
        256, ge=1, description="Array tasks running at once (sbatch --array=...%N)."
    )
    max_requeues: int = Field(
        8, ge=0, description="Times a preempted or timed-out task requeues itself."
    )
    sweep: bool = Field(
        True,
        description="Submit one more job, after the array ends however it ends, that finishes "
        "what any shard left and runs the remaining stages (synthset run).",
    )
    setup: list[str] = Field(
        default_factory=list,
        description="Shell lines run before each task, e.g. 'module load cuda', "
        "'source .venv/bin/activate'.",
    )
    sbatch: dict[str, str | int] = Field(
        default_factory=dict,
        description="More sbatch options, e.g. {account: my-lab, qos: high, constraint: h100}.",
    )

    @field_validator("sbatch")
    @classmethod
    def _plain_names(cls, v: dict[str, str | int]) -> dict[str, str | int]:
        for key in v:
            if key.startswith("-") or not key.replace("_", "-").replace("-", "").isalnum():
                raise ValueError(
                    f"sbatch option {key!r}: write the name without dashes, e.g. account"
                )
        return v
