"""The report's labels section: objects found per class, mean mask area, images whose own class
was not found, and a few images per class with their masks and boxes drawn. Empty when the run
has no labels."""

from __future__ import annotations

from html import escape

from synthset.classes import ClassInfo
from synthset.report.common import heading, img, num, read_json, table
from synthset.report.plots import labeled_strip
from synthset.store.atomic import iter_jsonl
from synthset.store.labels import LABELS_FILE, SUMMARY_FILE
from synthset.store.run_folder import RunFolder


def labels_section(run: RunFolder, classes: list[ClassInfo], per_class: int) -> str:
    summary = read_json(run.labels / SUMMARY_FILE)
    has_rows = next(iter_jsonl(run.labels / LABELS_FILE), None) is not None
    if not isinstance(summary, dict) or not has_rows:
        return ""
    shown = _first_rows(run, {cls.id for cls in classes}, per_class)
    threshold = summary["threshold"]
    parts = [
        heading("labels", "Labels"),
        f"<p>{summary['objects']} objects in {summary['images']} images "
        f"(method <b>{escape(str(summary['method']))}</b>, threshold "
        f"{escape(str(threshold))}); the image's own class was not found in "
        f"{summary['own_class_missing']}.</p>",
    ]
    table_rows = [
        [
            escape(name),
            str(c["images"]),
            str(c["objects"]),
            num(c["mean_mask_area"], 3),
            str(c["own_class_missing"]),
        ]
        for name, c in summary["per_class"].items()
    ]
    parts.append(
        table(
            ["class", "images", "objects", "mean mask area (fraction)", "own class missed"],
            table_rows,
            numeric_from=1,
        )
    )
    for cls in classes:
        mine = shown[cls.id]
        if not mine:
            continue
        strip = labeled_strip(
            [(run.images / r["file_name"], run.labels / r["mask_file"], r["objects"]) for r in mine]
        )
        parts.append(
            f"<div class=row><div><b>{escape(cls.name)}</b><br>"
            f"{img(strip, f'{cls.name}: images with their labels')}</div></div>"
        )
    return "\n".join(parts)


def _first_rows(run: RunFolder, class_ids: set[int], per_class: int) -> dict[int, list[dict]]:
    """The first ``per_class`` rows of the labels table of each class, read a row at a time and
    no further than needed (the table grows with the dataset; the report shows a few)."""
    shown: dict[int, list[dict]] = {c: [] for c in class_ids}
    missing = set(class_ids) if per_class > 0 else set()
    for row in iter_jsonl(run.labels / LABELS_FILE):
        mine = shown.get(row["label"])
        if mine is None or len(mine) >= per_class:
            continue
        mine.append(row)
        if len(mine) == per_class:
            missing.discard(row["label"])
            if not missing:
                break
    return shown
