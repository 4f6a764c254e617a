"""Pictures for the report, each returned as PNG bytes: CAS bars, scaling curves, per-class bars,
confusion matrices, the Optuna history and image strips. Matplotlib ``Figure`` objects render
through the Agg canvas directly (no pyplot, no display, no global backend switch)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, UnidentifiedImageError

from synthset.report.cas_data import TrainSet, find, scaling_points, subset_points, train_sets

TILE = 64
GAP = 2
COLORS = {"real": "#4c72b0", "synthetic": "#dd8452", "real+synthetic": "#55a868"}


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI for embedding PNG bytes in HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_png(fig: Figure) -> bytes:
    """Render with matplotlib's Agg canvas (no pyplot, no display, no global backend switch)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _color(t: TrainSet) -> str:
    return COLORS.get(t.label, COLORS.get(t.kind, "#8172b3"))


def cas_bar_chart(cas: dict[str, Any]) -> bytes:
    """Mean test accuracy (± std over seeds) per train set, values written on the bars."""
    sets = train_sets(cas)
    means = [t.mean for t in sets]
    fig = Figure(figsize=(min(16, 1.6 + 1.1 * len(sets)), 3.2))
    ax = fig.subplots()
    bars = ax.bar(
        [t.label for t in sets],
        means,
        yerr=[t.std for t in sets],
        capsize=4,
        color=[_color(t) for t in sets],
    )
    for bar, mean in zip(bars, means, strict=True):
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            mean + 0.02,
            f"{mean:.3f}",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    if len(sets) > 4:
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("real test accuracy")
    ax.set_title("CAS: trained on … , tested on real")
    ax.spines[["top", "right"]].set_visible(False)
    return _figure_png(fig)


def chart_sets(sets: list[TrainSet], limit: int = 6) -> list[TrainSet]:
    """The sets a grouped per-class chart shows: the plain three when present, else the first
    ``limit`` (every set stays in the per-class table)."""
    plain = [t for t in sets if t.canonical]
    return plain if plain else sets[:limit]


def per_class_chart(cas: dict[str, Any], class_names: list[str]) -> bytes:
    """Grouped bars: per-class test accuracy (mean over seeds) of each train set."""
    sets = chart_sets(train_sets(cas))
    k = len(class_names)
    width = 0.8 / max(1, len(sets))
    fig = Figure(figsize=(min(16, 2 + 0.45 * k * max(1, len(sets))), 3.2))
    ax = fig.subplots()
    for j, t in enumerate(sets):
        acc = [a if a is not None else 0.0 for a in t.per_class[:k]]
        acc += [0.0] * (k - len(acc))
        ax.bar([i + j * width for i in range(k)], acc, width, label=t.label, color=_color(t))
    ax.set_xticks([i + width * (len(sets) - 1) / 2 for i in range(k)])
    ax.set_xticklabels(
        [n[:16] for n in class_names],
        rotation=45 if k > 10 else 0,
        ha="right" if k > 10 else "center",
        fontsize=8,
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy")
    ax.legend(
        fontsize=8,
        ncols=max(1, len(sets)),
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
    )
    ax.spines[["top", "right"]].set_visible(False)
    return _figure_png(fig)


def _curve(ax: Any, points: list[tuple[float, TrainSet]], label: str, color: str) -> None:
    xs = [x for x, _ in points]
    ax.errorbar(
        xs,
        [t.mean for _, t in points],
        yerr=[t.std for _, t in points],
        marker="o",
        capsize=4,
        label=label,
        color=color,
    )


def _baseline(ax: Any, base: TrainSet | None, label: str) -> None:
    if base is None:
        return
    ax.axhline(base.mean, color=COLORS["real"], linestyle="--", label=label)
    ax.axhspan(base.mean - base.std, base.mean + base.std, color=COLORS["real"], alpha=0.12)


def _zoom_y(ax: Any, sets: list[TrainSet]) -> None:
    """Accuracy axis zoomed on the plotted values (with room for the error bars), so that
    differences of a few tenths of a percent stay visible; never above 1.0 + a margin."""
    lows = [t.mean - t.std for t in sets]
    highs = [t.mean + t.std for t in sets]
    if not lows:
        return
    lo, hi = min(lows), max(highs)
    pad = max(0.005, 0.1 * (hi - lo))
    ax.set_ylim(max(0.0, lo - pad), min(1.02, hi + pad))


def _log_x_if_wide(ax: Any, xs: list[float]) -> None:
    """Log-scaled x when the points span a factor of 4 or more, ticked at the points."""
    if xs and min(xs) > 0 and max(xs) / min(xs) >= 4:
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
        ticks = sorted(set(xs))
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])


def scaling_chart(cas: dict[str, Any]) -> bytes | None:
    """Test accuracy vs synthetic set size (± std over seeds), the real-only accuracy as a
    dashed line; ``None`` when cas.json has no synthetic-multiplier sets."""
    sets = train_sets(cas)
    syn = scaling_points(sets, "synthetic")
    mixed = scaling_points(sets, "real+synthetic")
    if not syn and not mixed:
        return None
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    if syn:
        _curve(ax, syn, "synthetic only", COLORS["synthetic"])
    if mixed:
        _curve(ax, mixed, "real + synthetic", COLORS["real+synthetic"])
    base = find(sets, "real")
    _baseline(ax, base, "real only (baseline)")
    _zoom_y(ax, [t for _, t in syn + mixed] + ([base] if base else []))
    xs = [x for x, _ in syn + mixed]
    _log_x_if_wide(ax, xs)
    by_count = all(t.n_synthetic for _, t in syn + mixed)
    ax.set_xlabel("synthetic train images" if by_count else "synthetic multiplier k (× real size)")
    ax.set_ylabel("real test accuracy")
    ax.set_title("Scaling: accuracy vs synthetic set size")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _figure_png(fig)


def subset_chart(cas: dict[str, Any]) -> bytes | None:
    """Test accuracy vs fraction of the real train data, real only vs real + synthetic;
    ``None`` when cas.json has no real-subset sets."""
    sets = train_sets(cas)
    if not any(t.real_subset is not None for t in sets):
        return None
    real = subset_points(sets, "real")
    mixed = subset_points(sets, "real+synthetic")
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    if real:
        _curve(ax, [(100 * x, t) for x, t in real], "real only", COLORS["real"])
    if mixed:
        _curve(
            ax,
            [(100 * x, t) for x, t in mixed],
            "real subset + synthetic",
            COLORS["real+synthetic"],
        )
    _log_x_if_wide(ax, [100 * x for x, _ in real + mixed])
    ax.set_xlabel("real train images used (%)")
    ax.set_ylabel("real test accuracy")
    _zoom_y(ax, [t for _, t in real + mixed])
    ax.set_title("Real-data efficiency: real subsets with and without synthetic data")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _figure_png(fig)


def curves_chart(curves: dict[str, dict[str, list[tuple[int, float]]]]) -> bytes:
    """One panel per metric (e.g. val_accuracy, val_loss): a line per train set over steps."""
    metrics = list(curves)
    fig = Figure(figsize=(5.2 * len(metrics), 3.4))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        for label, points in curves[metric].items():
            xs, ys = zip(*sorted(points), strict=True)
            color = COLORS.get(label)
            ax.plot(xs, ys, marker=".", label=label, color=color)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(fontsize=7, frameon=False)
    return _figure_png(fig)


def continual_chart(curves: dict[str, list[tuple[int, float]]], boundaries: list[int]) -> bytes:
    """Accuracy on the real test images of the classes seen so far, over the stream: a line per
    (stream, method); dotted lines where a new task begins."""
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.subplots()
    for label, points in curves.items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker=".", label=label)
    for x in boundaries:
        ax.axvline(x, color="#bbb", linestyle=":", linewidth=1)
    ax.set_xlabel("stream images seen")
    ax.set_ylabel("test accuracy, classes seen")
    ax.set_ylim(0, 1.02)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=7, frameon=False)
    return _figure_png(fig)


def confusion_chart(matrix: list[list[int]], class_names: list[str], title: str) -> bytes:
    """Heatmap of a confusion matrix (rows true, columns predicted), colored by row share,
    counts written in the cells when there are at most 20 classes."""
    k = len(matrix)
    totals = [max(1, sum(row)) for row in matrix]
    share = [[v / totals[i] for v in row] for i, row in enumerate(matrix)]
    size = min(12, 2.5 + 0.35 * k)
    fig = Figure(figsize=(size, size * 0.9))
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    if k <= 20:
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                color = "white" if share[i][j] > 0.6 else "black"
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color=color)
    names = [n[:14] for n in class_names[:k]] + [str(i) for i in range(len(class_names), k)]
    ticks = list(range(k)) if k <= 40 else []
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=7)
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _figure_png(fig)


def optuna_chart(trials: list[dict[str, Any]], maximize: bool = True) -> bytes | None:
    """Trial value vs trial number (finished trials as dots, pruned ones as grey crosses at their
    last reported value) and the best-so-far line; ``None`` without any value."""
    done = [(t["number"], t["value"]) for t in trials if _state(t) == "COMPLETE"]
    done = [(n, v) for n, v in done if v is not None]
    pruned = [(t["number"], _last(t)) for t in trials if _state(t) == "PRUNED"]
    pruned = [(n, v) for n, v in pruned if v is not None]
    if not done and not pruned:
        return None
    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    if done:
        ax.scatter(
            *zip(*done, strict=True), color=COLORS["synthetic"], label="trial value", zorder=3
        )
        steps = best_so_far(done, maximize)
        ax.step(*zip(*steps, strict=True), where="post", color=COLORS["real"], label="best so far")
    if pruned:
        ax.scatter(*zip(*pruned, strict=True), marker="x", color="#999999", label="pruned")
    ax.set_xlabel("trial number")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("objective value")
    ax.set_title("Optuna history")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _figure_png(fig)


def best_so_far(points: list[tuple[int, float]], maximize: bool = True) -> list[tuple[int, float]]:
    """(trial number, best value up to and including it), in trial order."""
    best: float | None = None
    out = []
    for n, v in sorted(points):
        best = v if best is None else (max(best, v) if maximize else min(best, v))
        out.append((n, best))
    return out


def _state(trial: dict[str, Any]) -> str:
    """``COMPLETE``/``PRUNED``/``FAIL``/... also from ``TrialState.COMPLETE`` spellings."""
    return str(trial.get("state", "")).rsplit(".", 1)[-1].upper()


def _last(trial: dict[str, Any]) -> float | None:
    steps = trial.get("intermediate") or {}
    if not isinstance(steps, dict) or not steps:
        return None
    key = max(steps, key=lambda s: float(s))
    return steps[key]


def _tile(path: Path, tile: int) -> Image.Image:
    """One image fitted into ``tile×tile``: nearest-neighbour when enlarging (tiny images stay
    crisp), Lanczos when shrinking; a grey square if the file cannot be read."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError):
        return Image.new("RGB", (tile, tile), (128, 128, 128))
    scale = tile / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    out = Image.new("RGB", (tile, tile), (255, 255, 255))
    out.paste(img.resize(size, resample), ((tile - size[0]) // 2, (tile - size[1]) // 2))
    return out


def image_strip(paths: list[Path], tile: int = TILE) -> bytes:
    """The images side by side in one PNG, each fitted into a ``tile×tile`` square."""
    n = max(1, len(paths))
    strip = Image.new("RGB", (n * tile + (n - 1) * GAP, tile), (255, 255, 255))
    for i, path in enumerate(paths):
        strip.paste(_tile(path, tile), (i * (tile + GAP), 0))
    buf = io.BytesIO()
    strip.save(buf, format="PNG")
    return buf.getvalue()


def adapt_loss_chart(points: list[dict[str, Any]], title: str) -> bytes:
    """The adapt stage's training loss (every logged window) and validation loss by step."""
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    train = [(p["step"], p["loss"]) for p in points if "loss" in p]
    val = [(p["step"], p["val_loss"]) for p in points if "val_loss" in p]
    if train:
        ax.plot(*zip(*train, strict=True), color=COLORS["synthetic"], label="train loss")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", color=COLORS["real"], label="val loss (real val)")
    ax.set_xlabel("step")
    ax.set_ylabel("denoising loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return _figure_png(fig)


def score_histogram(kept: list[float], dropped: list[float], score: str) -> bytes:
    """The distribution of one curation score, kept and dropped images stacked."""
    fig = Figure(figsize=(4.2, 2.8))
    ax = fig.add_subplot()
    values = [v for v in (kept, dropped) if v]
    ax.hist(
        values,
        bins=30,
        stacked=True,
        color=[COLORS["synthetic"], "#999999"][: len(values)],
        label=["kept", "dropped"][: len(values)] if len(values) == 2 else None,
    )
    if kept and dropped:
        ax.legend()
    ax.set_xlabel(score)
    ax.set_ylabel("images")
    ax.grid(alpha=0.3)
    return _figure_png(fig)


#: Colours of drawn objects, by class id (cycled).
OBJECT_COLORS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180))


def labeled_strip(items: list[tuple[Path, Path, list[dict[str, Any]]]], tile: int = 96) -> bytes:
    """Images with their labels drawn: each object's mask tinted and its box outlined, in its
    class's colour. ``items``: (image, instance mask, objects of its labels row)."""
    n = max(1, len(items))
    strip = Image.new("RGB", (n * tile + (n - 1) * GAP, tile), (255, 255, 255))
    for i, (image_path, mask_path, objects) in enumerate(items):
        with Image.open(image_path) as im:
            base = im.convert("RGB")
        scale = tile / max(base.size)
        size = (max(1, round(base.width * scale)), max(1, round(base.height * scale)))
        resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
        shown = np.asarray(base.resize(size, resample), dtype=np.float32)
        with Image.open(mask_path) as m:
            instances = np.asarray(m.resize(size, Image.Resampling.NEAREST))
        for number, obj in enumerate(objects, 1):
            colour = np.array(OBJECT_COLORS[obj["class_id"] % len(OBJECT_COLORS)], np.float32)
            where = instances == number
            shown[where] = 0.55 * shown[where] + 0.45 * colour
        out = Image.fromarray(shown.clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(out)
        for obj in objects:
            x0, y0, x1, y1 = (v * scale for v in obj["box"])
            colour = OBJECT_COLORS[obj["class_id"] % len(OBJECT_COLORS)]
            draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour)
        offset = ((tile - size[0]) // 2, (tile - size[1]) // 2)
        strip.paste(out, (i * (tile + GAP) + offset[0], offset[1]))
    buf = io.BytesIO()
    strip.save(buf, format="PNG")
    return buf.getvalue()
