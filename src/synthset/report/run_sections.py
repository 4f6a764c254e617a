"""Report sections about how the run was made: stage timings, package versions, the prompts
per class and the Optuna study. Each returns ``""`` when its data is missing."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

from synthset.classes import ClassInfo
from synthset.report.common import details, heading, img, num, read_json, table, value
from synthset.report.plots import adapt_loss_chart, optuna_chart
from synthset.store.atomic import read_jsonl
from synthset.store.run_folder import RunFolder

PROMPTS_PER_CLASS = 5


def stages_section(run: RunFolder, order: Sequence[str] | None = None) -> str:
    """Finished stages with what their markers recorded: in ``order`` (the stage table's), or
    in the order they finished."""
    markers = sorted((run.root / "stages").glob("*.json"), key=lambda p: p.stat().st_mtime)
    if order is not None:
        rank = {name: i for i, name in enumerate(order)}
        markers.sort(key=lambda p: rank.get(p.stem, len(rank)))
    rows = []
    for path in markers:
        info = read_json(path)
        info = info if isinstance(info, dict) else {}
        when = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
        extra = {k: v for k, v in info.items() if k not in ("fingerprint", "seconds")}
        rows.append(
            [
                escape(path.stem),
                when.strftime("%Y-%m-%d %H:%M:%S UTC"),
                num(info.get("seconds"), 1),
                escape(", ".join(f"{k}={v}" for k, v in extra.items())) or "–",
            ]
        )
    if not rows:
        return ""
    return heading("stages", "Stages") + table(
        ["stage", "finished", "seconds", "recorded"], rows, numeric_from=2
    )


def adapt_section(adapt_dir: Path, method: str | None) -> str:
    """The adapt stage's method, its artifact's description and its loss curves."""
    if method is None or not adapt_dir.is_dir():
        return ""
    log_file = adapt_dir / "training_log.jsonl"
    points = read_jsonl(log_file) if log_file.exists() else []
    meta = read_json(adapt_dir / "synthset_adapt.json")
    rows = [["method", escape(method)]]
    if isinstance(meta, dict):
        rows += [[escape(k), escape(str(v))] for k, v in meta.items() if k not in ("method",)]
    val = [p["val_loss"] for p in points if "val_loss" in p]
    if val:
        rows.append(["val loss (first → last)", f"{val[0]:.4f} → {val[-1]:.4f}"])
    parts = [heading("adapt", "Adaptation"), table(["", "value"], rows, numeric_from=2)]
    if points:
        parts.append(img(adapt_loss_chart(points, f"adapt ({method})"), "adapt loss curve"))
    return "\n".join(parts)


def provenance_section(provenance: Any, recipe_text: str) -> str:
    """Machine facts and package versions, the raw provenance.json and the resolved recipe."""
    parts = [heading("provenance", "Provenance")]
    if isinstance(provenance, dict):
        facts = [
            [escape(k), escape(str(provenance[k]))]
            for k in ("created", "python", "platform", "cuda", "torch_threads")
            if k in provenance
        ]
        versions = provenance.get("versions")
        if isinstance(versions, dict):
            facts += [
                [escape(f"{pkg} version"), escape(str(v) if v is not None else "not installed")]
                for pkg, v in versions.items()
            ]
        if facts:
            parts.append(table(["", "value"], facts, numeric_from=2))
        parts.append(details("provenance.json", json.dumps(provenance, indent=2, sort_keys=True)))
    else:
        parts.append("<p class=muted>No provenance.json in this run.</p>")
    parts.append(details("Resolved recipe (recipe.yaml)", recipe_text))
    return "".join(parts)


def prompts_section(
    path: Path, classes: list[ClassInfo], per_class: int = PROMPTS_PER_CLASS
) -> str:
    """A few prompts of every class from ``prompts.jsonl`` (rows of ``PromptRecord``)."""
    if not path.exists():
        return ""
    try:
        records = read_jsonl(path)
    except (OSError, ValueError):
        return ""
    by_class: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if isinstance(r, dict) and r.get("prompt") is not None and r.get("class_id") is not None:
            try:
                by_class[int(r["class_id"])].append(r)
            except (TypeError, ValueError):
                continue  # a malformed row
    if not by_class:
        return ""
    rows = []
    for c in classes:
        recs = by_class.get(c.id, [])
        strategies = sorted({str(r.get("strategy", "")) for r in recs} - {""})
        shown = "".join(f"<li>{escape(str(r['prompt']))}</li>" for r in recs[:per_class])
        rows.append(
            [
                f"<b>{escape(c.name)}</b>",
                str(len(recs)),
                escape(", ".join(strategies)) or "–",
                f"<ul class=prompts>{shown}</ul>" if shown else "<i>none</i>",
            ]
        )
    return (
        heading("prompts", "Prompts")
        + f"<p class=muted>{len(records)} prompts in prompts.jsonl; the first {per_class} of "
        "each class.</p>"
        + "<table><tr><th>class</th><th>prompts</th><th>strategy</th><th>examples</th></tr>"
        + "".join(
            f"<tr><td>{a}</td><td class=num>{b}</td><td>{c}</td><td>{d}</td></tr>"
            for a, b, c, d in rows
        )
        + "</table>"
    )


def tune_section(tune_dir: Path) -> str:
    """The Optuna history plot, the best parameters and every trial, from ``tune/``."""
    trials = read_json(tune_dir / "trials.json")
    if not isinstance(trials, list):
        return ""
    trials = [t for t in trials if isinstance(t, dict) and "number" in t]
    best = read_json(tune_dir / "best.json")
    best = best if isinstance(best, dict) else {}
    maximize = str(best.get("direction", "maximize")).lower() != "minimize"
    parts = [heading("tuning", "Tuning (Optuna)")]
    chart = optuna_chart(trials, maximize)
    if chart is not None:
        parts.append(img(chart, "Optuna history"))
    states: dict[str, int] = defaultdict(int)
    for t in trials:
        states[str(t.get("state", "?")).rsplit(".", 1)[-1].upper()] += 1
    summary = f"{len(trials)} trials (" + ", ".join(f"{n} {s}" for s, n in states.items()) + ")"
    if best.get("metric"):
        summary += f"; objective: {best['metric']}"
    parts.append(f"<p class=muted>{escape(summary)}</p>")
    if isinstance(best.get("params"), dict):
        rows = [[escape(str(k)), value(v)] for k, v in best["params"].items()]
        parts.append(
            f"<h3>Best trial: value {escape(num(best.get('value')))}</h3>"
            + table(["parameter", "value"], rows, numeric_from=1)
        )
    rows = [
        [
            str(t["number"]),
            escape(str(t.get("state", "")).rsplit(".", 1)[-1]),
            num(t.get("value")),
            ", ".join(f"{escape(str(k))}={value(v)}" for k, v in _params(t).items()),
            num(t.get("seconds"), 1),
        ]
        for t in trials
    ]
    parts.append(
        "<details><summary>All trials</summary>"
        + table(
            ["trial", "state", "value", "params", "seconds"],
            rows,
            numeric_from=2,
            text_columns=(3,),
        )
        + "</details>"
    )
    if (tune_dir / "best_recipe.yaml").exists():
        text = (tune_dir / "best_recipe.yaml").read_text(encoding="utf-8", errors="replace")
        parts.append(details("Best recipe (tune/best_recipe.yaml)", text))
    return "".join(parts)


def _params(trial: dict[str, Any]) -> dict[str, Any]:
    params = trial.get("params")
    return params if isinstance(params, dict) else {}
