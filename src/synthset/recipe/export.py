"""The export section: the formats the synthetic set (its curated view, when there is one) is
written to, beside or outside the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from synthset.recipe.base import Strict

ExportFormat = Literal["imagefolder", "webdataset", "hf", "parquet", "stream", "yolo", "coco"]


class ExportSpec(Strict):
    """``synthset export``: write the kept synthetic images in formats other tools read."""

    formats: list[ExportFormat] = Field(
        [],
        description="imagefolder (class folders + metadata.jsonl, hard links where possible), "
        "webdataset (tar shards: image, .cls, .json), hf (datasets.save_to_disk), parquet "
        "(one file, images embedded), stream (a continual-learning stream JSON), yolo "
        "(Ultralytics images/ + labels/ + data.yaml), coco (images/ + annotations.json); yolo "
        "and coco need a 'labels' section.",
    )
    out_dir: Path | None = Field(
        None, description="Where each format's folder goes (default: <output_dir>/export)."
    )
    shard_max_count: int = Field(1000, ge=1, description="webdataset: samples per shard.")
    shard_max_bytes: int | None = Field(
        None, ge=1024, description="webdataset: also close a shard before it passes this size."
    )
    push_to_hub: str | None = Field(
        None, description="hf: also push to this Hub dataset repo id (needs the token variable)."
    )
    token_env: str = Field(
        "HF_TOKEN", description="hf: the environment variable that holds the Hub token."
    )
    stream_task_size: int = Field(
        2, ge=1, description="stream: classes per task (tasks arrive one after another)."
    )
    stream_shuffle_classes: bool = Field(
        True, description="stream: classes arrive in a seeded random order (else class order)."
    )
    yolo_task: Literal["detect", "segment"] = Field(
        "detect", description="yolo: boxes (detect) or polygons (segment) in the label files."
    )
    val_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="yolo: the seeded share of images in images/val (0: val is the train set).",
    )
    coco_segmentation: Literal["polygon", "rle"] = Field(
        "polygon", description="coco: object masks as polygons or as RLE (needs pycocotools)."
    )
