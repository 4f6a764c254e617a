"""The report's retrieval section: retrieved vs synthetic side by side — CAS of each at equal
counts, what the pool gave per class, and the top retrieved images beside synthetic ones.
Empty when the run retrieved nothing."""

from __future__ import annotations

from html import escape
from typing import Any

from synthset.classes import ClassInfo
from synthset.report.common import heading, img, num, read_json, table
from synthset.report.plots import image_strip
from synthset.store.atomic import read_jsonl
from synthset.store.retrieved import RETRIEVED_FILE, SUMMARY_FILE
from synthset.store.run_folder import RunFolder

COMPARED = ("real", "synthetic", "retrieved", "retrieved+synthetic")


def retrieve_section(
    run: RunFolder,
    classes: list[ClassInfo],
    per_class: int,
    synthetic: list[dict[str, Any]],
    cas: dict[str, Any] | None,
) -> str:
    summary = read_json(run.retrieve / SUMMARY_FILE)
    rows = read_jsonl(run.retrieve / RETRIEVED_FILE)
    if not isinstance(summary, dict) or not rows:
        return ""
    parts = [
        heading("retrieval", "Retrieved vs synthetic"),
        f"<p>Retrieved <b>{summary['retrieved']}</b> of {summary['pool_images']} pool images "
        f"by <b>{escape(summary['by'])}</b> from <code>{escape(summary['pool'])}</code>; "
        f"{summary['leaks_skipped']} near-copies of real "
        f"{escape('/'.join(summary['leak_splits']) or 'evaluation')} images skipped.</p>",
    ]
    sets = (cas or {}).get("train_sets", {})
    compared = [s for s in COMPARED if s in sets]
    if compared:
        cas_rows = [
            [
                escape(s),
                str(sets[s]["summary"]["n_train"]),
                f"{num(sets[s]['summary']['test_accuracy_mean'])} ± "
                f"{num(sets[s]['summary']['test_accuracy_std'])}",
            ]
            for s in compared
        ]
        parts.append(table(["train set", "images", "test accuracy"], cas_rows, numeric_from=1))
    strips = []
    for c in classes:
        got = [run.retrieve / r["path"] for r in rows if r["label"] == c.id][:per_class]
        syn = [r["path"] for r in synthetic if r["label"] == c.id][:per_class]
        sim = summary["mean_similarity"].get(c.name)
        strips.append(
            f"<tr><td><b>{escape(c.name)}</b><br><span class=muted>"
            f"{summary['per_class'].get(c.name, 0)} kept of "
            f"{summary['matched_per_class'].get(c.name, 0)} matched; mean similarity "
            f"{num(sim, 3) if sim is not None else '-'}</span></td>"
            f"<td>{img(image_strip(got), f'retrieved {c.name}') if got else '<i>none</i>'}</td>"
            f"<td>{img(image_strip(syn), f'synthetic {c.name}') if syn else '<i>none</i>'}</td>"
            "</tr>"
        )
    parts.append(
        "<table><tr><th>class</th><th>retrieved (best matches)</th><th>synthetic</th></tr>"
        + "".join(strips)
        + "</table>"
    )
    return "\n".join(parts)
