"""The layout of a run folder and the markers that say a stage is complete."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthset.store.atomic import atomic_write_json


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run's output folder; every stage writes only below ``root``."""

    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def provenance(self) -> Path:
        return self.root / "provenance.json"

    @property
    def classes(self) -> Path:
        return self.root / "classes.json"

    @property
    def real(self) -> Path:
        """Real data as ImageFolders: ``real/{train,val,test}/<class>/``."""
        return self.root / "real"

    @property
    def adapt(self) -> Path:
        """The adapted model checkpoint (a diffusers folder)."""
        return self.root / "adapt"

    @property
    def prompts(self) -> Path:
        """``prompts.jsonl``: class_id, class_name, prompt, strategy, source."""
        return self.root / "prompts.jsonl"

    @property
    def prompts_report(self) -> Path:
        """Per-class counts, label-check and dedup stats, and diversity of the prompts."""
        return self.root / "prompts_report.json"

    @property
    def cache(self) -> Path:
        """Caches that make reruns free (LLM answers)."""
        return self.root / "cache"

    @property
    def plan(self) -> Path:
        return self.root / "plan.jsonl"

    @property
    def images(self) -> Path:
        """Synthetic images as an ImageFolder with ``metadata.jsonl``."""
        return self.root / "images"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.jsonl"

    @property
    def stale(self) -> Path:
        """Files moved out of ``images/`` because the index no longer lists them (a format
        change, a smaller plan): ``stale/<UTC time>/images/<same relative path>``."""
        return self.root / "stale"

    @property
    def locks(self) -> Path:
        """OS file locks of the run's writers (``synthset run``, each generate shard)."""
        return self.root / "locks"

    @property
    def curate(self) -> Path:
        """Per-image scores and the kept view (``kept.jsonl``) of the synthetic set."""
        return self.root / "curate"

    @property
    def labels(self) -> Path:
        """Object labels of the synthetic images: ``labels.jsonl``, ``masks/``, ``labels.json``."""
        return self.root / "labels"

    @property
    def export(self) -> Path:
        """``export.json`` (what each format holds) and, by default, one folder per format."""
        return self.root / "export"

    @property
    def retrieve(self) -> Path:
        """Real images retrieved from a pool: ``images/<class>/``, ``retrieved.jsonl``."""
        return self.root / "retrieve"

    @property
    def evaluate(self) -> Path:
        return self.root / "evaluate"

    @property
    def tune(self) -> Path:
        """The Optuna study: ``study.db``, ``trials.json``, ``best.json``, trial folders."""
        return self.root / "tune"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    def stage_marker(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"

    def stage_done(self, stage: str, fingerprint: str) -> bool:
        """True when ``stage`` finished with the same recipe fingerprint."""
        marker = self.stage_marker(stage)
        if not marker.exists():
            return False
        try:
            return json.loads(marker.read_text()).get("fingerprint") == fingerprint
        except (json.JSONDecodeError, OSError):
            return False

    def mark_done(self, stage: str, fingerprint: str, **info: Any) -> None:
        """Record that ``stage`` finished for this fingerprint (written last, atomically)."""
        atomic_write_json(self.stage_marker(stage), {"fingerprint": fingerprint, **info})
