"""What the benchmark scripts share: the machine facts, mean ± std over seeds and writing a
result file."""

from __future__ import annotations

import json
import platform
import statistics
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


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value), rounded to 4 places."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.mean(values), 4), "std": round(std, 4)}
