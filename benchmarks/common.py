"""What the benchmark scripts share: the machine facts and writing a result file."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """The CPU, torch's version and its thread count, recorded beside every result."""
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def write_result(path: Path, result: dict[str, Any]) -> None:
    """The result as indented JSON (the folder made when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
