"""Executors by ``generate.executor``: one line per executor."""

from __future__ import annotations

from typing import TYPE_CHECKING

from synthset.executors.base import Executor
from synthset.registry import Registry

if TYPE_CHECKING:
    from synthset.recipe import GenerateSpec

EXECUTORS: Registry[type[Executor]] = Registry(
    "generate.executor",
    {
        "local": "synthset.executors.local:LocalExecutor",
        "queue": "synthset.executors.queue:QueueExecutor",
        "ray": "synthset.executors.ray_data:RayExecutor",
    },
)


def build_executor(spec: GenerateSpec) -> Executor:
    """The executor of ``spec.executor`` (imported on first use); ``local`` with ``workers``
    above one is the queue, whose processes share the batches."""
    name = "queue" if spec.executor == "local" and spec.workers > 1 else spec.executor
    return EXECUTORS.load(name)(spec)
