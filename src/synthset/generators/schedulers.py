"""Diffusers noise schedulers by name: short aliases or any diffusers scheduler class name."""

from __future__ import annotations

from typing import Any

from synthset.errors import SynthsetError

ALIASES = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "dpmsolver": "DPMSolverMultistepScheduler",
    "dpm++_sde": "DPMSolverSDEScheduler",
    "unipc": "UniPCMultistepScheduler",
    "lcm": "LCMScheduler",
    "tcd": "TCDScheduler",
    "flow_euler": "FlowMatchEulerDiscreteScheduler",
}


def scheduler_class(name: str) -> type:
    """The diffusers scheduler class for an alias (``ddim``) or a class name (``DDIMScheduler``)."""
    import diffusers

    cls_name = ALIASES.get(name.lower(), name)
    cls = getattr(diffusers, cls_name, None)
    if cls is None or not cls_name.endswith("Scheduler"):
        raise SynthsetError(
            f"generate.generator.scheduler: unknown scheduler {name!r}; use one of "
            f"{', '.join(ALIASES)} or a diffusers scheduler class name"
        )
    return cls


def make_scheduler(name: str, config: dict[str, Any]) -> Any:
    """A scheduler of the named kind, built from another scheduler's config."""
    return scheduler_class(name).from_config(config)
