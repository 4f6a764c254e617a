"""Research caption formats: read and write them so users can bring (or take) their captions.

- raw lines: ``caption => class name``, one per line (blank lines and ``#`` comments skipped);
- JSON: ``{"captions_single_labeled": [[caption, [label]], ...]}``, where a label is an integer
  class id or a class name;
- JSON: ``{"captions_multiple_labeled": [[caption, [label, ...]], ...]}`` (alone or beside the
  single-labeled list). synthset makes single-label datasets, and a caption naming several
  classes asks for an image holding several classes, which no one label describes: such entries
  are refused (all of them listed in one error line), entries with exactly one label are read
  like single-labeled ones.

A malformed file is refused with one line listing every bad line or entry, not only the first.
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
MULTI_KEY = "captions_multiple_labeled"
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
    unmatched_captions: list[LabeledCaption] = field(default_factory=list)

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


def _plural(word: str, n: int) -> str:
    if n == 1:
        return word
    return word.removesuffix("entry") + "entries" if word.endswith("entry") else word + "s"


def _bad_error(name: str, bad: list[tuple[str, int, str]], unit: str, fix: str) -> SynthsetError:
    """One line naming every bad line/entry: ``bad`` holds (what, number, reason)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for what, number, reason in bad:
        groups.setdefault((what, reason), []).append(number)
    parts = []
    for (what, reason), numbers in groups.items():
        shown = ", ".join(str(n) for n in numbers[:10])
        more = f" (+{len(numbers) - 10} more)" if len(numbers) > 10 else ""
        parts.append(f"{_plural(what, len(numbers))} {shown}{more}: {reason}")
    units = _plural(unit, len(bad))
    return SynthsetError(f"prompts.file {name}: {len(bad)} bad {units} ({'; '.join(parts)}); {fix}")


def parse_caption_lines(text: str, name: str = "<text>") -> list[LabeledCaption]:
    """Parse ``caption => class name`` lines; malformed lines are one error naming them all."""
    out, bad = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        caption, arrow, label = stripped.rpartition(ARROW)
        caption, label = caption.strip(), label.strip()
        if not arrow:
            bad.append(("line", number, f"no '{ARROW}'"))
        elif not caption:
            bad.append(("line", number, "no caption"))
        elif not label:
            bad.append(("line", number, "no class name"))
        else:
            out.append(LabeledCaption(caption, label, f"line {number}"))
    if bad:
        raise _bad_error(name, bad, "line", "write each as 'caption => class name'")
    return out


def _label(value: object) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def parse_captions_json(text: str, name: str = "<json>") -> list[LabeledCaption]:
    """Parse ``{"captions_single_labeled": [[caption, [label]], ...]}`` and/or
    ``{"captions_multiple_labeled": [[caption, [label, ...]], ...]}`` (one label per caption:
    see the module docstring); malformed entries are one error naming them all."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SynthsetError(
            f"prompts.file: {name} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg})"
        ) from exc
    keys = [k for k in (JSON_KEY, MULTI_KEY) if isinstance(data, dict) and k in data]
    if not keys or any(not isinstance(data[k], list) for k in keys):
        raise SynthsetError(
            f'prompts.file: {name} needs a top-level {{"{JSON_KEY}": [[caption, [label]], ...]}} '
            f'or {{"{MULTI_KEY}": [[caption, [label]], ...]}}'
        )
    out, bad = [], []
    for key in keys:
        what = "entry" if key == JSON_KEY else f"{MULTI_KEY} entry"
        for i, entry in enumerate(data[key]):
            ok = (
                isinstance(entry, list)
                and len(entry) == 2
                and isinstance(entry[0], str)
                and entry[0].strip()
                and isinstance(entry[1], list)
                and len(entry[1]) >= 1
                and all(_label(label) for label in entry[1])
            )
            if not ok:
                bad.append((what, i, "not [caption, [label]] (label: a class id or name)"))
            elif len(entry[1]) > 1:
                bad.append(
                    (what, i, "several labels (an image of several classes has no one label)")
                )
            else:
                where = f"entry {i}" if key == JSON_KEY else f"multi entry {i}"
                out.append(LabeledCaption(entry[0].strip(), entry[1][0], where))
    if bad:
        raise _bad_error(name, bad, "entry", "give each caption exactly one label")
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
            result.unmatched_captions.append(cap)
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
