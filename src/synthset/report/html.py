"""The run report: one self-contained HTML file (inline CSS, images as base64 data URIs, no
scripts, no external URLs), so it opens offline and can be mailed or archived as is. Every
section reads its own file of the run folder and is left out when that file is missing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import Any

from synthset.classes import ClassInfo
from synthset.data.splits import load_splits
from synthset.errors import SynthsetError
from synthset.evaluate.tensors import samples_from_imagefolder
from synthset.recipe import Recipe, dump_recipe
from synthset.report.common import heading, img, read_json
from synthset.report.curate_section import curate_section
from synthset.report.eval_sections import (
    cas_section,
    confusion_section,
    continual_section,
    curves_section,
    fidelity_section,
    per_class_section,
    scaling_section,
)
from synthset.report.labels_section import labels_section
from synthset.report.plots import image_strip
from synthset.report.retrieve_section import retrieve_section
from synthset.report.run_sections import (
    adapt_section,
    prompts_section,
    provenance_section,
    stages_section,
    tune_section,
)
from synthset.store.atomic import atomic_write_text
from synthset.store.curated import KEPT_FILE, kept_of
from synthset.store.imagefolder import METADATA, read_rows
from synthset.store.manifest import Manifest
from synthset.store.run_folder import RunFolder

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:middle}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{image-rendering:pixelated;max-width:100%}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
.muted{color:#777}.note{background:#fff8e1;padding:.6em;border-left:4px solid #f0c000}
.row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
nav{font-size:.9em}nav a{margin-right:.8em}ul.prompts{margin:0;padding-left:1.2em;font-size:.9em}
"""


def _synthetic_rows(
    run: RunFolder, recipe: Recipe, classes: list[ClassInfo]
) -> list[dict[str, Any]]:
    """Synthetic images as rows with an absolute ``path``, a ``label`` and maybe a ``prompt``:
    from ``evaluate.synthetic_dir`` when the recipe names one, else from images/metadata.jsonl
    (its curated view's kept rows when the recipe curates), else from the manifest of finished
    items."""
    synthetic_dir = recipe.evaluate.synthetic_dir if recipe.evaluate else None
    if synthetic_dir is not None and synthetic_dir.is_dir():
        names = [c.name for c in classes]
        try:
            samples = samples_from_imagefolder(synthetic_dir, names)
        except SynthsetError:
            samples = []
        return [{"path": p, "label": lbl} for p, lbl in samples]
    if (run.images / METADATA).exists():
        try:
            rows = read_rows(run.images)
        except SynthsetError:  # a malformed index: the sections that need it are left out
            return []
        if recipe.curate is not None and (run.curate / KEPT_FILE).exists():
            rows = kept_of(run.curate, rows)
        return rows
    out = []
    for r in Manifest(run.manifest).rows():  # generation not finished: the images made so far
        if r.get("class_id") is not None and r.get("file_name"):
            out.append(r | {"label": int(r["class_id"]), "path": run.images / r["file_name"]})
    return out


def _summary_section(
    recipe: Recipe, classes: list[ClassInfo], counts: Counter[int], n_real: Counter[int]
) -> str:
    total = sum(counts.values())
    items = [("Recipe", recipe.name), ("Seed", str(recipe.seed)), ("Classes", str(len(classes)))]
    if recipe.generate is not None:
        described = [
            (f"{getattr(g, 'name', '')} " if recipe.generate.generators else "")
            + g.kind
            + (f" ({g.model})" if g.model else "")
            + (f", strength {g.strength}" if g.strength is not None else "")
            for g in recipe.generate.members
        ]
        items += [
            ("Generator" if len(described) == 1 else "Generators", "; ".join(described)),
            ("Planned images per class", str(recipe.generate.images_per_class)),
        ]
    synthetic_dir = recipe.evaluate.synthetic_dir if recipe.evaluate else None
    if synthetic_dir is not None:
        items.append(("Synthetic ImageFolder", str(synthetic_dir)))
    items.append(("Synthetic images", f"{total} in total"))
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in items)
    per_class = "".join(
        f"<tr><td>{c.id}</td><td>{escape(c.name)}</td><td class=num>{counts.get(c.id, 0)}</td>"
        f"<td class=num>{n_real.get(c.id, 0)}</td></tr>"
        for c in classes
    )
    return (
        heading("run", "Run") + f"<table>{rows}</table>"
        "<details><summary>Images per class</summary><table><tr><th>label</th><th>class</th>"
        f"<th>synthetic</th><th>real train</th></tr>{per_class}</table></details>"
    )


def _samples_section(
    run: RunFolder, classes: list[ClassInfo], per_class: int, synthetic: list[dict[str, Any]]
) -> str:
    real_train = _real_train(run)
    rows = []
    for c in classes:
        real = [p for p, lbl in real_train if lbl == c.id][:per_class]
        syn = [r for r in synthetic if r["label"] == c.id][:per_class]
        real_html = img(image_strip(real), f"real {c.name}") if real else "<i>none</i>"
        syn_html = (
            img(image_strip([r["path"] for r in syn]), f"synthetic {c.name}")
            if syn
            else "<i>none</i>"
        )
        prompt = syn[0].get("prompt", "") if syn else ""
        rows.append(
            f"<tr><td><b>{escape(c.name)}</b><br><span class=muted>{escape(str(prompt))}</span>"
            f"</td><td>{real_html}</td><td>{syn_html}</td></tr>"
        )
    return (
        heading("samples", f"Samples ({per_class} per class)")
        + "<table><tr><th>class / prompt</th>"
        "<th>real (train split)</th><th>synthetic</th></tr>" + "".join(rows) + "</table>"
    )


def _real_train(run: RunFolder) -> list[tuple[Path, int]]:
    path = run.real / "splits.json"
    if not path.exists():
        return []
    return load_splits(path).get("train", [])


SECTIONS = (
    ("run", "Run"),
    ("stages", "Stages"),
    ("cas", "CAS"),
    ("scaling", "Scaling"),
    ("per-class", "Per-class accuracy"),
    ("confusion", "Confusion matrices"),
    ("curves", "Training curves"),
    ("fidelity", "Fidelity"),
    ("continual", "Continual learning"),
    ("curation", "Curation"),
    ("retrieval", "Retrieved vs synthetic"),
    ("labels", "Labels"),
    ("samples", "Samples"),
    ("prompts", "Prompts"),
    ("tuning", "Tuning"),
    ("provenance", "Provenance"),
)


def _nav(body: str) -> str:
    """Links to the sections this report has."""
    links = [
        f'<a href="#{anchor}">{escape(title)}</a>'
        for anchor, title in SECTIONS
        if f'<h2 id="{anchor}">' in body
    ]
    return "<nav>" + "".join(links) + "</nav>"


def _guarded(title: str, build: Callable[[], str]) -> str:
    """The section, or a one-line note when its input file is malformed (a report of the rest
    beats no report)."""
    try:
        return build()
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        return (
            f"<p class=note>{escape(title)}: not shown, its input file is malformed "
            f"({escape(type(exc).__name__)}: {escape(str(exc))}).</p>"
        )


def write_report(
    run: RunFolder,
    recipe: Recipe,
    classes: list[ClassInfo],
    stage_order: Sequence[str] | None = None,
) -> Path:
    """Write ``run.report`` from whatever the run folder holds: summary, stages (in
    ``stage_order``, else in the order they finished), CAS table and charts, scaling curves,
    per-class accuracy, confusion matrices, fidelity, real vs synthetic samples, prompts, the
    Optuna study and provenance."""
    synthetic = _synthetic_rows(run, recipe, classes)
    counts = Counter(r["label"] for r in synthetic)
    n_real = Counter(lbl for _, lbl in _real_train(run))
    cas = read_json(run.evaluate / "cas.json")
    cas = cas if isinstance(cas, dict) else None
    names = [c.name for c in classes]
    recipe_text = (
        run.recipe.read_text(encoding="utf-8") if run.recipe.exists() else dump_recipe(recipe)
    )
    fidelity = read_json(run.evaluate / "fidelity.json")
    samples_per_class = recipe.report.samples_per_class
    builders: list[tuple[str, Callable[[], str]]] = [
        ("Run", lambda: _summary_section(recipe, classes, counts, n_real)),
        ("Stages", lambda: stages_section(run, stage_order)),
        ("Adaptation", lambda: adapt_section(run.adapt, recipe.adapt and recipe.adapt.method)),
        ("CAS", lambda: cas_section(cas)),
        ("Scaling", lambda: scaling_section(cas)),
        ("Per-class accuracy", lambda: per_class_section(cas, names)),
        ("Confusion matrices", lambda: confusion_section(cas, names)),
        ("Training curves", lambda: curves_section(run.evaluate / "metrics.jsonl", cas)),
        ("Fidelity", lambda: fidelity_section(fidelity)),
        (
            "Continual learning",
            lambda: continual_section(read_json(run.evaluate / "continual.json")),
        ),
        ("Curation", lambda: curate_section(run, classes, samples_per_class)),
        (
            "Retrieved vs synthetic",
            lambda: retrieve_section(run, classes, samples_per_class, synthetic, cas),
        ),
        ("Labels", lambda: labels_section(run, classes, samples_per_class)),
        ("Samples", lambda: _samples_section(run, classes, samples_per_class, synthetic)),
        ("Prompts", lambda: prompts_section(run.prompts, classes)),
        ("Tuning", lambda: tune_section(run.tune)),
        ("Provenance", lambda: provenance_section(read_json(run.provenance), recipe_text)),
    ]
    sections = [_guarded(title, build) for title, build in builders]
    body = "\n".join(s for s in sections if s)
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>synthset report: {escape(recipe.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>synthset report: {escape(recipe.name)}</h1>",
        f"<p class=muted>Run folder: {escape(str(run.root))}</p>",
        _nav(body),
        body,
        "</body></html>\n",
    ]
    atomic_write_text(run.report, "\n".join(parts))
    return run.report
