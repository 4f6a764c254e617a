"""The file strategy: import existing captions (``caption => class`` lines or the
``captions_single_labeled`` / ``captions_multiple_labeled`` JSON, see
:mod:`synthset.prompts.formats`)."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from synthset.errors import SynthsetError
from synthset.prompts.base import Candidate, ClassRequest
from synthset.prompts.formats import LabeledCaption, match_captions, read_captions
from synthset.recipe import PromptsSpec

log = logging.getLogger(__name__)


class FileStrategy:
    """Offers every caption of ``prompts.file`` for its class in the first round (file order);
    captions whose label is not one of the recipe's classes are skipped, counted and recorded
    (``report()``, written to prompts_report.json by the prompts stage)."""

    max_recorded = 200  # unmatched captions listed in the report (all are counted)

    name = "file"

    def __init__(self, spec: PromptsSpec) -> None:
        if spec.file is None:
            raise SynthsetError("prompts.file: strategy 'file' needs a caption file to import")
        self.spec = spec
        self.path = spec.file
        self.total = 0
        self.unmatched: Counter[str] = Counter()
        self.unmatched_captions: list[LabeledCaption] = []

    def propose(
        self, requests: Sequence[ClassRequest], round_index: int, rng: random.Random
    ) -> dict[int, list[Candidate]]:
        """All of a class's captions in round 0; nothing later (the file has no more)."""
        if round_index > 0:
            return {}
        captions = read_captions(self.path)
        result = match_captions(captions, [r.cls for r in requests])
        self.total, self.unmatched = len(captions), result.unmatched
        self.unmatched_captions = result.unmatched_captions
        if result.matched == 0:
            seen = ", ".join(repr(k) for k, _ in result.unmatched.most_common(3))
            raise SynthsetError(
                f"prompts.file: none of the {len(captions)} captions in {self.path} is labeled "
                f"with one of the recipe's classes (labels seen: {seen or 'none'}); check "
                "classes or the file's labels (a class id or a class name)"
            )
        if result.unmatched:
            n = sum(result.unmatched.values())
            log.warning(
                "prompts.file: %d of %d captions in %s name no recipe class (e.g. %r); skipped",
                n, len(captions), self.path, next(iter(result.unmatched)),
            )  # fmt: skip
        return {
            cid: [Candidate(c.caption, f"file:{c.where.replace(' ', '')}") for c in caps]
            for cid, caps in result.by_class.items()
        }

    def report(self) -> dict[str, Any]:
        """The last import: captions read, skipped ones by unknown label, and the skipped
        captions themselves (the first ``max_recorded``, in file order)."""
        return {
            "captions": self.total,
            "unmatched": sum(self.unmatched.values()),
            "unmatched_labels": dict(self.unmatched.most_common(20)),
            "unmatched_captions": [
                {"where": c.where, "caption": c.caption, "label": c.label}
                for c in self.unmatched_captions[: self.max_recorded]
            ],
        }
