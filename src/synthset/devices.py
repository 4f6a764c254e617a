"""Where torch work runs: the recipe's device and dtype names resolved, and the CPU thread count
for tiny images. Shared by every stage that runs a model (adapt, generate, prompts, evaluate)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from synthset.errors import SynthsetError

if TYPE_CHECKING:
    import torch

TINY_IMAGE = 16  # at or below this size, CPU training runs on one thread (see cpu_threads)


def resolve_device(device: str) -> torch.device:
    """``auto`` → cuda if available, else mps, else cpu; anything else is checked."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SynthsetError(
            f"device {device!r} is not a torch device; use auto, cpu, cuda, cuda:1 or mps"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SynthsetError(
            f"device {device!r}: no CUDA GPU is visible here; use device: auto or cpu"
        )
    return dev


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The torch dtype for a recipe name; half precision on CPU falls back to float32."""
    import torch

    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
    if device.type == "cpu" and dtype == torch.float16:
        return torch.float32
    return dtype


@contextlib.contextmanager
def cpu_threads(device: torch.device, size: int) -> Iterator[None]:
    """Use one intra-op thread while training on tiny images on the CPU, then restore.

    Each op on a batch of 8×8 images is too small to split across threads: measured on a busy
    2-core machine, the digits CAS took 105 s with 2 threads and 16 s with one."""
    if device.type != "cpu" or size > TINY_IMAGE:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
