"""Research caption formats: read and write them so users can bring (or take) their captions.

- raw lines: ``caption => class name``, one per line (blank lines and ``#`` comments skipped);
- JSON: ``{"captions_single_labeled": [[caption, [label]], ...]}``, where a label is an integer
  class id or a class name.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from synthset.classes import ClassInfo
from synthset.errors import SynthsetError
from synthset.prompts.base import PromptRecord, normalize
from synthset.store.atomic import atomic_write_text

JSON_KEY = "captions_single_labeled"
ARROW = "=>"


@dataclass(frozen=True)
class LabeledCaption:
    """One imported caption: its label (class id or name) and where it was in the file."""

    caption: str
    label: int | str
    where: str


@dataclass
class MatchResult:
    """Captions matched to a recipe's classes, and the labels that matched none."""

    by_class: dict[int, list[LabeledCaption]]
    unmatched: Counter[str] = field(default_factory=Counter)

    @property
    def matched(self) -> int:
        return sum(len(v) for v in self.by_class.values())


# ----------------------------------------------------------------------------- reading


def read_captions(path: Path) -> list[LabeledCaption]:
    """Read a caption file in either format (JSON when it is ``.json`` or starts with ``{``)."""
    if not path.is_file():
        raise SynthsetError(f"prompts.file: {path} not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        return parse_captions_json(text, str(path))
    return parse_caption_lines(text, str(path))


def parse_caption_lines(text: str, name: str = "<text>") -> list[LabeledCaption]:
    """Parse ``caption => class name`` lines; a malformed line is an error naming its number."""
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        caption, arrow, label = stripped.rpartition(ARROW)
        caption, label = caption.strip(), label.strip()
        if not arrow or not caption or not label:
            raise SynthsetError(
                f"prompts.file: {name} line {number} is not 'caption => class name': "
                f"{stripped[:80]!r}"
            )
        out.append(LabeledCaption(caption, label, f"line {number}"))
    return out


def parse_captions_json(text: str, name: str = "<json>") -> list[LabeledCaption]:
    """Parse ``{"captions_single_labeled": [[caption, [label]], ...]}``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SynthsetError(
            f"prompts.file: {name} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg})"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get(JSON_KEY), list):
        raise SynthsetError(
            f'prompts.file: {name} needs a top-level {{"{JSON_KEY}": [[caption, [label]], ...]}}'
        )
    out = []
    for i, entry in enumerate(data[JSON_KEY]):
        ok = (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and entry[0].strip()
            and isinstance(entry[1], list)
            and len(entry[1]) == 1
            and isinstance(entry[1][0], (int, str))
            and not isinstance(entry[1][0], bool)
        )
        if not ok:
            raise SynthsetError(
                f"prompts.file: {name} {JSON_KEY} entry {i} is not [caption, [label]] "
                f"(label: a class id or name): {json.dumps(entry)[:80]}"
            )
        out.append(LabeledCaption(entry[0].strip(), entry[1][0], f"entry {i}"))
    return out


def match_captions(captions: Sequence[LabeledCaption], classes: Sequence[ClassInfo]) -> MatchResult:
    """Pair captions with classes: an int label is a class id, a string a class name (compared
    normalized, so case and punctuation do not matter). Others are counted in ``unmatched``."""
    by_id = {c.id: c for c in classes}
    by_name = {normalize(c.name): c for c in classes}
    result = MatchResult({c.id: [] for c in classes})
    for cap in captions:
        cls = (
            by_id.get(cap.label)
            if isinstance(cap.label, int)
            else by_name.get(normalize(cap.label))
        )
        if cls is None:
            result.unmatched[str(cap.label)] += 1
        else:
            result.by_class[cls.id].append(cap)
    return result


# ----------------------------------------------------------------------------- writing


def _one_line(text: str) -> str:
    return " ".join(text.split())


def write_caption_lines(path: Path, records: Sequence[PromptRecord]) -> None:
    """Write ``caption => class name`` lines."""
    lines = [f"{_one_line(r.prompt)} {ARROW} {_one_line(r.class_name)}" for r in records]
    atomic_write_text(path, "".join(f"{ln}\n" for ln in lines))


def write_captions_json(path: Path, records: Sequence[PromptRecord]) -> None:
    """Write ``{"captions_single_labeled": [[caption, [class_id]], ...]}``."""
    data = {JSON_KEY: [[r.prompt, [r.class_id]] for r in records]}
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")


def export_prompts(records: Sequence[PromptRecord], path: Path) -> Path:
    """Write prompts in a research format chosen by the file suffix: ``.json`` →
    captions_single_labeled, anything else → ``caption => class`` lines."""
    if path.suffix.lower() == ".json":
        write_captions_json(path, records)
    else:
        write_caption_lines(path, records)
    return path
