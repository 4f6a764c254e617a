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
    """The executor of ``spec.executor`` (imported on first use)."""
    return EXECUTORS.load(spec.executor)(spec)
