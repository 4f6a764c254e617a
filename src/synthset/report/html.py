"""The run report: one self-contained HTML file (inline CSS, images as base64 data URIs), so it
opens offline and can be mailed or archived as is."""

from __future__ import annotations

import json
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

from synthset.classes import ClassInfo
from synthset.data.splits import load_splits
from synthset.errors import SynthsetError
from synthset.evaluate.tensors import samples_from_imagefolder
from synthset.recipe import Recipe, dump_recipe
from synthset.report.plots import (
    cas_bar_chart,
    data_uri,
    image_strip,
    ordered_sets,
    per_class_chart,
)
from synthset.store.atomic import atomic_write_text, read_jsonl
from synthset.store.run_folder import RunFolder

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:middle}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{image-rendering:pixelated;max-width:100%}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
.muted{color:#777}.note{background:#fff8e1;padding:.6em;border-left:4px solid #f0c000}
"""


def _synthetic_rows(
    run: RunFolder, recipe: Recipe, classes: list[ClassInfo]
) -> list[dict[str, Any]]:
    """Synthetic images as rows with an absolute ``path``, a ``label`` and maybe a ``prompt``:
    from ``evaluate.synthetic_dir`` when the recipe names one, else from images/metadata.jsonl,
    else from the manifest of finished items."""
    synthetic_dir = recipe.evaluate.synthetic_dir if recipe.evaluate else None
    if synthetic_dir is not None and synthetic_dir.is_dir():
        names = [c.name for c in classes]
        try:
            samples = samples_from_imagefolder(synthetic_dir, names)
        except SynthsetError:
            samples = []
        return [{"path": p, "label": lbl} for p, lbl in samples]
    meta = run.images / "metadata.jsonl"
    rows = read_jsonl(meta) if meta.exists() else read_jsonl(run.manifest)
    out = []
    for r in rows:
        label = r.get("label", r.get("class_id"))
        if label is not None and r.get("file_name"):
            out.append(r | {"label": int(label), "path": run.images / r["file_name"]})
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _img(png: bytes, alt: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{escape(alt)}">'


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
        f"<h2>Run</h2><table>{rows}</table>"
        "<details><summary>Images per class</summary><table><tr><th>label</th><th>class</th>"
        f"<th>synthetic</th><th>real train</th></tr>{per_class}</table></details>"
    )


def _cas_section(cas: dict[str, Any] | None, classes: list[ClassInfo]) -> str:
    if cas is None:
        return (
            "<h2>CAS (classification accuracy score)</h2><p class=note>Evaluation was not run: "
            "no evaluate/cas.json in this run. Add an <code>evaluate</code> section to the recipe "
            "and run <code>synthset evaluate</code>.</p>"
        )
    cfg = cas.get("config", {})
    rows = []
    for name in ordered_sets(cas["train_sets"]):
        s = cas["train_sets"][name]["summary"]
        rows.append(
            f"<tr><td>{escape(name)}</td>"
            f"<td class=num>{s['test_accuracy_mean']:.4f} ± {s['test_accuracy_std']:.4f}</td>"
            f"<td class=num>{s['best_val_accuracy_mean']:.4f}</td>"
            f"<td class=num>{s['n_train']}</td><td class=num>{s.get('n_seeds', '')}</td></tr>"
        )
    config = (
        f"classifier {cfg.get('classifier')}, {cfg.get('image_size')}×{cfg.get('image_size')} "
        f"px, {cfg.get('channels')} channel(s), {cfg.get('epochs')} epochs, "
        f"{cfg.get('n_val')} real val / {cfg.get('n_test')} real test images"
    )
    names = [c.name for c in classes]
    return (
        "<h2>CAS (classification accuracy score)</h2>"
        f"<p class=muted>{escape(config)}. Model selection uses the real validation split; the "
        "real test split is scored once per run, with the best-on-validation weights.</p>"
        "<table><tr><th>trained on</th><th>real test accuracy (mean ± std)</th>"
        "<th>best val accuracy</th><th>train images</th><th>seeds</th></tr>"
        + "".join(rows)
        + "</table>"
        + _img(cas_bar_chart(cas), "CAS bar chart")
        + "<h3>Per-class test accuracy</h3>"
        + _img(per_class_chart(cas, names), "per-class accuracy chart")
    )


def _samples_section(
    run: RunFolder, classes: list[ClassInfo], per_class: int, synthetic: list[dict[str, Any]]
) -> str:
    real_train = _real_train(run)
    rows = []
    for c in classes:
        real = [p for p, lbl in real_train if lbl == c.id][:per_class]
        syn = [r for r in synthetic if r["label"] == c.id][:per_class]
        real_html = _img(image_strip(real), f"real {c.name}") if real else "<i>none</i>"
        syn_html = (
            _img(image_strip([r["path"] for r in syn]), f"synthetic {c.name}")
            if syn
            else "<i>none</i>"
        )
        prompt = syn[0].get("prompt", "") if syn else ""
        rows.append(
            f"<tr><td><b>{escape(c.name)}</b><br><span class=muted>{escape(str(prompt))}</span>"
            f"</td><td>{real_html}</td><td>{syn_html}</td></tr>"
        )
    return (
        f"<h2>Samples ({per_class} per class)</h2><table><tr><th>class / prompt</th>"
        "<th>real (train split)</th><th>synthetic</th></tr>" + "".join(rows) + "</table>"
    )


def _real_train(run: RunFolder) -> list[tuple[Path, int]]:
    path = run.real / "splits.json"
    if not path.exists():
        return []
    return load_splits(path).get("train", [])


def _details(title: str, text: str) -> str:
    return f"<details><summary>{escape(title)}</summary><pre>{escape(text)}</pre></details>"


def write_report(run: RunFolder, recipe: Recipe, classes: list[ClassInfo]) -> Path:
    """Write ``run.report``: run summary, CAS table and charts, real vs synthetic samples."""
    synthetic = _synthetic_rows(run, recipe, classes)
    counts = Counter(r["label"] for r in synthetic)
    n_real = Counter(lbl for _, lbl in _real_train(run))
    cas = _read_json(run.evaluate / "cas.json")
    provenance = _read_json(run.provenance)
    recipe_text = (
        run.recipe.read_text(encoding="utf-8") if run.recipe.exists() else dump_recipe(recipe)
    )
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>synthset report: {escape(recipe.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>synthset report: {escape(recipe.name)}</h1>",
        f"<p class=muted>Run folder: {escape(str(run.root))}</p>",
        _summary_section(recipe, classes, counts, n_real),
        _cas_section(cas, classes),
        _samples_section(run, classes, recipe.report.samples_per_class, synthetic),
        "<h2>Provenance</h2>",
        _details("provenance.json", json.dumps(provenance, indent=2, sort_keys=True))
        if provenance is not None
        else "<p class=muted>No provenance.json in this run.</p>",
        _details("Resolved recipe (recipe.yaml)", recipe_text),
        "</body></html>\n",
    ]
    atomic_write_text(run.report, "\n".join(parts))
    return run.report
