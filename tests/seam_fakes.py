"""Components a newcomer would add, each in its own file with one registry line: a generator, an
adapter and an executor. The seam tests register them and run them through the real pipeline."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from synthset.adapt.base import AdaptData
from synthset.executors.base import GenerationJob, GenerationResult
from synthset.executors.local import run_generation
from synthset.plan import WorkItem
from synthset.recipe import AdaptSpec, GenerateSpec, GeneratorSpec
from synthset.store.manifest import Manifest

COLORS_FILE = "colors.json"


class SolidColorGenerator:
    """``kind: solid``: an 8×8 image per item, grey level from the class (or from the adapted
    ``colors.json`` in ``spec.model``) plus a pixel of noise drawn from the item's seed."""

    def __init__(self, spec: GeneratorSpec, root: Path | None = None) -> None:
        self.name = "solid"
        self.colors: dict[str, float] = {}
        if spec.model:
            self.colors = json.loads((Path(spec.model) / COLORS_FILE).read_text())

    def level(self, class_id: int) -> int:
        return int(round(self.colors.get(str(class_id), 20.0 * class_id)))

    def generate(self, items: Sequence[WorkItem]) -> list[Image.Image]:
        out = []
        for it in items:
            arr = np.full((8, 8), self.level(it.class_id), dtype=np.uint8)
            arr[0, 0] = np.random.default_rng(it.seed).integers(0, 256)
            out.append(Image.fromarray(arr, "L"))
        return out


class MeanLevelAdapter:
    """``method: mean_level``: learns each class's mean grey level from the real train split."""

    def __init__(self, spec: AdaptSpec) -> None:
        self.spec = spec

    def fit(self, data: AdaptData, out_dir: Path, seed: int, progress: bool = True) -> None:
        levels: dict[str, list[float]] = {}
        for path, label in data.train:
            with Image.open(path) as img:
                levels.setdefault(str(label), []).append(float(np.asarray(img.convert("L")).mean()))
        out_dir.mkdir(parents=True, exist_ok=True)
        means = {k: sum(v) / len(v) for k, v in levels.items()}
        (out_dir / COLORS_FILE).write_text(json.dumps(means))

    def generator_inputs(self, out_dir: Path) -> dict[str, Any]:
        return {"model": str(out_dir)}


class ReversedShardsExecutor:
    """``executor: reversed_shards``: runs the job as three shards, last shard first (as three
    nodes finishing in any order would), through the shard worker every executor shares."""

    shards = 3

    def __init__(self, spec: GenerateSpec) -> None:
        self.spec = spec

    def run(self, job: GenerationJob, progress: bool = True) -> GenerationResult:
        total = GenerationResult(0, 0, 0, 0.0)
        for index in reversed(range(self.shards)):
            shard = (index, self.shards)
            manifest = Manifest(job.manifest, shard)
            res = run_generation(
                job.plan, job.make_generator, job.spec, job.images_dir, manifest, job.config,
                shard=shard, progress=False,
            )  # fmt: skip
            total.generated += res.generated
            total.skipped += res.skipped
            total.shard_items += res.shard_items
            total.seconds += res.seconds
        return total
