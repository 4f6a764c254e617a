"""Exporters by format (``export.formats``): one line per format."""

from __future__ import annotations

from synthset.export.base import Exporter
from synthset.registry import Registry

EXPORTERS: Registry[Exporter] = Registry(
    "export.formats",
    {
        "imagefolder": "synthset.export.imagefolder:export_imagefolder",
        "webdataset": "synthset.export.webdataset:export_webdataset",
        "hf": "synthset.export.hf:export_hf",
        "parquet": "synthset.export.hf:export_parquet",
        "stream": "synthset.export.stream:export_stream",
        "yolo": "synthset.export.yolo:export_yolo",
        "coco": "synthset.export.coco:export_coco",
    },
)
