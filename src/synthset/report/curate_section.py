"""The report's curation section: what was kept and why, per class and reason; the leaks of
real evaluation images; each score's distribution; the lowest- and highest-scored images of
each class. Empty when the run has no curated view."""

from __future__ import annotations

from html import escape
from typing import Any

from synthset.classes import ClassInfo
from synthset.report.common import heading, img, num, read_json, table
from synthset.report.plots import image_strip, score_histogram
from synthset.store.atomic import read_jsonl
from synthset.store.curated import KEPT_FILE, SUMMARY_FILE
from synthset.store.run_folder import RunFolder


def curate_section(run: RunFolder, classes: list[ClassInfo], per_class: int) -> str:
    summary = read_json(run.curate / SUMMARY_FILE)
    view = read_jsonl(run.curate / KEPT_FILE)
    if not isinstance(summary, dict) or not view:
        return ""
    parts = [
        heading("curation", "Curation"),
        f"<p>Kept <b>{summary['kept']}</b> of {summary['images']} synthetic images "
        f"({100 * summary['kept_fraction']:.1f}%); evaluation trains on the kept ones. "
        f"{summary['leaks']} near-copies of real val/test images dropped.</p>",
    ]
    reasons = sorted({k for c in summary["per_class"].values() for k in c["dropped"]})
    rows = [
        [
            escape(name),
            f"{c['kept']}/{c['images']}",
            *[str(c["dropped"].get(r, 0)) for r in reasons],
        ]
        for name, c in summary["per_class"].items()
    ]
    parts.append(table(["class", "kept", *[f"dropped: {r}" for r in reasons]], rows))
    parts += _auto_rows(summary.get("auto", {}))
    if summary.get("leak_matches"):
        leak_rows = [
            [
                escape(m["item_id"]),
                escape(m["split"]),
                escape(m["real_image"]),
                num(m["similarity"]),
            ]
            for m in summary["leak_matches"]
        ]
        parts.append(
            "<details><summary>Leaks</summary>"
            + table(["item", "split", "real image", "similarity"], leak_rows, numeric_from=3)
            + "</details>"
        )
    timing = summary.get("seconds_per_1000_images", {})
    if timing:
        parts.append(
            table(
                ["step", "seconds per 1,000 images"],
                [[escape(k), num(v, 3)] for k, v in timing.items()],
            )
        )
    scores = [s for s in summary.get("scorers", []) if s in view[0]]
    charts = [
        img(
            score_histogram(
                [r[s] for r in view if r["kept"]], [r[s] for r in view if not r["kept"]], s
            ),
            f"{s} distribution",
        )
        for s in scores
    ]
    if charts:
        parts.append("<div class=row>" + "".join(charts) + "</div>")
    parts += _extremes(run, view, classes, scores, per_class)
    return "\n".join(parts)


def _auto_rows(auto: dict[str, Any]) -> list[str]:
    rows = [
        [
            escape(a["rule"]),
            escape(a.get("proxy_train_set", "synthetic")),
            escape(", ".join(f"{p}: {v:.3f}" for p, v in a["val_accuracy"].items())),
        ]
        for a in auto.values()
    ]
    if not rows:
        return []
    return [
        "<p class=muted>'auto' percentiles, chosen by a proxy classifier's real-val accuracy:</p>",
        table(
            ["chosen rule", "proxy trains on", "val accuracy by percentile"], rows, numeric_from=3
        ),
    ]


def _extremes(
    run: RunFolder,
    view: list[dict[str, Any]],
    classes: list[ClassInfo],
    scores: list[str],
    n: int,
) -> list[str]:
    """Per class and score: its n lowest- and n highest-scored images."""
    out = []
    for s in scores:
        rows = []
        for c in classes:
            mine = sorted((r for r in view if r["label"] == c.id), key=lambda r: r[s])
            if not mine:
                continue
            low = [run.images / r["file_name"] for r in mine[:n]]
            high = [run.images / r["file_name"] for r in mine[-n:][::-1]]
            rows.append(
                [
                    escape(c.name),
                    img(image_strip(low), f"lowest {s}"),
                    img(image_strip(high), f"highest {s}"),
                ]
            )
        if rows:
            out.append(
                f"<details><summary>Lowest and highest {escape(s)} per class</summary>"
                + table(["class", "lowest", "highest"], rows, numeric_from=3)
                + "</details>"
            )
    return out
