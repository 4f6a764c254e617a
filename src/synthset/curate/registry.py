"""Scorers by name (``curate.scorers``): one line per scorer."""

from __future__ import annotations

from synthset.curate.base import Scorer
from synthset.registry import Registry

SCORERS: Registry[type[Scorer]] = Registry(
    "curate.scorers",
    {
        "label_agreement": "synthset.curate.label_agreement:LabelAgreement",
        "typicality": "synthset.curate.typicality:Typicality",
        "clip": "synthset.curate.clip:ClipScore",
    },
)
