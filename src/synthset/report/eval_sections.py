"""Report sections from ``evaluate/``: the CAS table, scaling curves, per-class accuracy,
confusion matrices, training curves and the fidelity table. Each returns ``""`` when its data
is missing."""

from __future__ import annotations

from collections import defaultdict
from html import escape
from pathlib import Path
from typing import Any

from synthset.report.cas_data import TrainSet, train_sets
from synthset.report.common import heading, img, num, table
from synthset.report.plots import (
    cas_bar_chart,
    chart_sets,
    confusion_chart,
    continual_chart,
    curves_chart,
    per_class_chart,
    scaling_chart,
    subset_chart,
)
from synthset.store.atomic import read_jsonl

CAS_TITLE = "CAS (classification accuracy score)"


def _composition(t: TrainSet) -> str:
    parts = []
    if t.real_subset is not None:
        parts.append(f"{100 * t.real_subset:g}% of real")
    if t.synthetic_multiplier is not None:
        parts.append(f"synthetic ×{t.synthetic_multiplier:g}")
    if t.real_batch_fraction is not None:
        parts.append(f"{100 * t.real_batch_fraction:g}% real per batch")
    return escape(", ".join(parts)) if parts else "–"


def cas_section(cas: dict[str, Any] | None) -> str:
    """The table of every train set (mean ± std over seeds, sizes, seeds) and the bar chart."""
    sets = train_sets(cas)
    if not sets:
        return (
            heading("cas", CAS_TITLE) + "<p class=note>Evaluation was not run: no "
            "evaluate/cas.json in this run. Add an <code>evaluate</code> section to the recipe "
            "and run <code>synthset evaluate</code>.</p>"
        )
    cfg = (cas or {}).get("config") or {}
    with_ood = any(t.ood is not None for t in sets)
    rows = [
        [
            escape(t.label),
            escape(t.kind),
            _composition(t),
            f"{t.mean:.4f} ± {t.std:.4f}",
            num(t.balanced),
            num(t.top5),
            *([num(t.ood)] if with_ood else []),
            num(t.best_val),
            num(t.n_train),
            num(t.n_real),
            num(t.n_synthetic),
            escape(", ".join(str(s) for s in t.seeds)) or "–",
            num(t.seconds, 1),
        ]
        for t in sets
    ]
    zs = (cas or {}).get("zero_shot")
    if isinstance(zs, dict):  # the reference row: CLIP's zero-shot classifier, no training
        rows.append(
            [
                "zero-shot CLIP",
                "zero_shot",
                escape(str(zs.get("clip_model", ""))),
                f"{zs['test_accuracy']:.4f}",
                num(zs.get("test_balanced_accuracy")),
                num(zs.get("test_top5_accuracy")),
                *([num(zs.get("ood_test_accuracy"))] if with_ood else []),
                *["–"] * 6,
            ]
        )
    header = [
        "trained on",
        "kind",
        "composition",
        "real test accuracy (mean ± std)",
        "balanced accuracy",
        "top-5 accuracy",
        *(["out-of-domain accuracy"] if with_ood else []),
        "best val accuracy",
        "train images",
        "real",
        "synthetic",
        "seeds",
        "train seconds",
    ]
    size = cfg.get("image_size")
    config = (
        f"classifier {cfg.get('classifier')}, {size}×{size} px, {cfg.get('channels')} channel(s), "
        f"{cfg.get('epochs')} epochs, optimizer {cfg.get('optimizer', 'adamw')}, "
        f"{cfg.get('n_val')} real val / {cfg.get('n_test')} real test images"
    )
    if cfg.get("ema_epochs"):
        config += f", weights averaged (EMA) over about {cfg['ema_epochs']:g} epochs"
    return (
        heading("cas", CAS_TITLE)
        + f"<p class=muted>{escape(config)}. Model selection uses the real validation split; the "
        "real test split is scored once per run, with the best-on-validation weights.</p>"
        + table(header, rows, numeric_from=3)
        + img(cas_bar_chart(cas or {}), "CAS bar chart")
    )


def scaling_section(cas: dict[str, Any] | None) -> str:
    """The synthetic-size curve and the real-subset curve, whichever the study has."""
    charts = []
    scaling = scaling_chart(cas or {})
    if scaling is not None:
        charts.append(img(scaling, "scaling curve: accuracy vs synthetic set size"))
    subsets = subset_chart(cas or {})
    if subsets is not None:
        charts.append(img(subsets, "real-subset curve: real only vs real subset + synthetic"))
    if not charts:
        return ""
    return (
        heading("scaling", "Scaling")
        + "<p class=muted>Mean real test accuracy over seeds, error bars ± one std; the dashed "
        "line is the model trained on all real images.</p>"
        + "<div class=row>"
        + "".join(charts)
        + "</div>"
    )


def per_class_section(cas: dict[str, Any] | None, class_names: list[str]) -> str:
    """Grouped bars (the plain train sets) and a table with every train set."""
    sets = train_sets(cas)
    if not sets or not any(t.per_class for t in sets):
        return ""
    rows = []
    for i, name in enumerate(class_names):
        cells = [num(t.per_class[i], 3) if i < len(t.per_class) else "–" for t in sets]
        rows.append([escape(name), *cells])
    shown = ", ".join(t.label for t in chart_sets(sets))
    return (
        heading("per-class", "Per-class accuracy")
        + img(per_class_chart(cas or {}, class_names), "per-class accuracy chart")
        + f"<p class=muted>Chart: {escape(shown)}; mean over seeds of the real test accuracy of "
        "each class.</p><details><summary>Per-class accuracy of every train set</summary>"
        + table(["class", *(t.label for t in sets)], rows)
        + "</details>"
    )


def confusion_section(cas: dict[str, Any] | None, class_names: list[str]) -> str:
    """One heatmap per plain train set (real / synthetic / real+synthetic) that has a matrix."""
    sets = [t for t in train_sets(cas) if t.canonical and t.confusion]
    if not sets:
        return ""
    charts = "".join(
        img(
            confusion_chart(t.confusion or [], class_names, f"trained on {t.label}"),
            f"confusion matrix: {t.label}",
        )
        for t in sets
    )
    return (
        heading("confusion", "Confusion matrices")
        + "<p class=muted>Real test images, summed over seeds; rows are the true class, columns "
        "the prediction, colour the share of the row.</p><div class=row>" + charts + "</div>"
    )


FIDELITY = (
    ("fid", "FID", 2),
    ("kid_mean", "KID", 4),
    ("precision", "precision", 3),
    ("recall", "recall", 3),
    ("density", "density", 3),
    ("coverage", "coverage", 3),
    ("label_fidelity", "label fidelity", 3),
    ("diversity_real", "diversity real", 3),
    ("diversity_synthetic", "diversity synthetic", 3),
)


def _metric_cells(values: dict[str, Any] | None, keys: list[tuple[str, str, int]]) -> list[str]:
    values = values if isinstance(values, dict) else {}
    cells = []
    for key, _, digits in keys:
        cell = num(values.get(key), digits)
        if key == "kid_mean" and values.get("kid_std") is not None and values.get(key) is not None:
            cell += f" ± {values['kid_std']:.4f}"
        cells.append(cell)
    return cells


def fidelity_section(fid: dict[str, Any] | None) -> str:
    """Overall and per-class fidelity / diversity metrics; headers name the feature extractor."""
    if not isinstance(fid, dict) or not (fid.get("overall") or fid.get("per_class")):
        return ""
    extractor = str(fid.get("extractor", "unknown extractor"))
    overall = fid.get("overall") if isinstance(fid.get("overall"), dict) else {}
    per_class = fid.get("per_class") if isinstance(fid.get("per_class"), dict) else {}
    keys = [
        k
        for k in FIDELITY
        if k[0] in overall or any(isinstance(v, dict) and k[0] in v for v in per_class.values())
    ]
    if not keys:
        return ""
    ext = f"<br><span class=muted>({escape(extractor)})</span>"
    header = ["", *(f"{escape(title)}{ext}" for _, title, _ in keys)]
    clip = fid.get("clip_score") if isinstance(fid.get("clip_score"), dict) else None
    clip_per_class = (clip or {}).get("per_class") or {}
    if clip:
        model = escape(str(clip.get("model", "clip")))
        header.append(f"CLIP score<br><span class=muted>({model})</span>")
    rows = [["<b>overall</b>", *_metric_cells(overall, keys)]]
    if clip:
        rows[0].append(num(clip.get("mean"), 2))
    for name, values in per_class.items():
        row = [escape(str(name)), *_metric_cells(values, keys)]
        if clip:
            row.append(num(clip_per_class.get(name), 2))
        rows.append(row)
    facts = (
        f"Features: {extractor} ({fid.get('feature_dim', '?')}-d), "
        f"{fid.get('n_real', '?')} real vs {fid.get('n_synthetic', '?')} synthetic images. "
        "Lower FID/KID is closer; label fidelity is the share of synthetic images a classifier "
        "trained on real images gives their own label; diversity is the mean pairwise feature "
        "distance within a set."
    )
    return (
        heading("fidelity", "Fidelity and diversity")
        + f"<p class=muted>{escape(facts)}</p>"
        + table(header, rows, raw_header=True)
    )


CURVE_METRICS = ("val_accuracy", "val_loss")
MAX_CURVES = 12


def _tracker_rows(metrics_jsonl: Path) -> list[dict[str, Any]]:
    try:
        return read_jsonl(metrics_jsonl) if metrics_jsonl.exists() else []
    except (OSError, ValueError):
        return []


def _history_rows(cas: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The per-epoch validation history of cas.json as tracker rows (a fallback)."""
    rows = []
    for label, entry in ((cas or {}).get("train_sets") or {}).items():
        for run in entry.get("runs") or []:
            acc = run.get("val_accuracy_history") or []
            loss = run.get("val_loss_history") or []
            for epoch, value in enumerate(acc):
                metrics = {"val_accuracy": value}
                if epoch < len(loss):
                    metrics["val_loss"] = loss[epoch]
                prefix = f"{label}/seed{run.get('seed', 0)}"
                rows.append({"prefix": prefix, "step": epoch, "metrics": metrics})
    return rows


def training_curves(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """metric -> train set -> (step, mean over seeds), from ``{"prefix", "step", "metrics"}``
    rows whose prefix is ``<train set>/seed<n>``; later rows for the same (prefix, step) win
    (a resumed run logs an epoch again)."""
    last: dict[tuple[str, str, int], float] = {}
    for r in rows:
        if not isinstance(r, dict) or not isinstance(r.get("metrics"), dict):
            continue
        for metric, value in r["metrics"].items():
            if metric in CURVE_METRICS and isinstance(value, (int, float)):
                last[(metric, str(r.get("prefix", "")), int(r.get("step", 0)))] = float(value)
    sums: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for (metric, prefix, step), value in last.items():
        train_set = prefix.rsplit("/seed", 1)[0]
        sums[metric][train_set][step].append(value)
    return {
        metric: {
            label: [(step, sum(v) / len(v)) for step, v in sorted(steps.items())]
            for label, steps in sorted(by_set.items())
        }
        for metric, by_set in sorted(sums.items(), key=lambda m: CURVE_METRICS.index(m[0]))
    }


def curves_section(metrics_jsonl: Path, cas: dict[str, Any] | None) -> str:
    """Validation accuracy / loss per epoch, from the tracker log (else cas.json histories)."""
    rows = _tracker_rows(metrics_jsonl)
    source = "evaluate/metrics.jsonl"
    if not rows:
        rows, source = _history_rows(cas), "evaluate/cas.json"
    curves = training_curves(rows)
    if not curves:
        return ""
    note = f"Real validation split, mean over seeds, from {source}"
    plain = {t.label for t in train_sets(cas) if t.canonical}
    many = max(len(by_set) for by_set in curves.values())
    if many > MAX_CURVES and any(plain & set(by_set) for by_set in curves.values()):
        curves = {m: {k: v for k, v in b.items() if k in plain} for m, b in curves.items()}
        note += f"; the plain train sets of {many}"
    return (
        heading("curves", "Training curves")
        + f"<p class=muted>{escape(note)}.</p>"
        + img(curves_chart(curves), "training curves")
    )


def continual_section(result: dict[str, Any] | None) -> str:
    """A_auc and A_last per stream and method (mean ± std over seeds) and the accuracy-over-time
    curves of the first seed."""
    if not isinstance(result, dict) or not result.get("streams"):
        return ""
    cfg = result.get("config") or {}
    ood = any(
        "ood_a_last" in m.get("summary", {}) for s in result["streams"].values() for m in s.values()
    )
    metrics = ["a_auc", "a_last", *(["ood_a_auc", "ood_a_last"] if ood else [])]
    rows, curves = [], {}
    boundaries: list[int] = []
    for stream, methods in result["streams"].items():
        for method, entry in methods.items():
            summary = entry["summary"]
            cells = [f"{summary[m]['mean']:.4f} ± {summary[m]['std']:.4f}" for m in metrics]
            rows.append([escape(stream), escape(method), *cells])
            first = entry["runs"][0]
            curves[f"{stream} {method}"] = [(int(x), float(y)) for x, y in first["curve"]]
            boundaries = boundaries or [int(x) for x in first.get("task_ends", [])[:-1]]
    header = ["stream", "method", "A_auc", "A_last", *(["OOD A_auc", "OOD A_last"] if ood else [])]
    tasks = " → ".join("{" + ", ".join(map(str, t)) + "}" for t in cfg.get("tasks", []))
    facts = (
        f"Online class-incremental: tasks {tasks}; each image seen once, "
        f"{cfg.get('online_iterations', 1)} step(s) per batch of {cfg.get('batch_size', '?')}; "
        f"er replays from a {cfg.get('buffer_size', '?')}-image reservoir. A_auc: the area under "
        "accuracy over time (tested every "
        f"{cfg.get('eval_every', '?')} stream images on the real test images of the classes seen "
        "so far); A_last: accuracy on every class at the end."
    )
    return (
        heading("continual", "Continual learning")
        + f"<p class=muted>{escape(facts)}</p>"
        + table(header, rows)
        + img(continual_chart(curves, boundaries), "accuracy over the stream")
    )
