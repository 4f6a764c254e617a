"""Pictures for the report, each returned as PNG bytes: CAS bar charts and image strips."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

TILE = 64
GAP = 2
COLORS = {"real": "#4c72b0", "synthetic": "#dd8452", "real+synthetic": "#55a868"}
ORDER = ("real", "synthetic", "real+synthetic")


def ordered_sets(sets: dict[str, Any]) -> list[str]:
    """Train set names in the canonical order (cas.json stores keys sorted)."""
    return sorted(sets, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI for embedding PNG bytes in HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_png(fig: Figure) -> bytes:
    """Render with matplotlib's Agg canvas (no pyplot, no display, no global backend switch)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def cas_bar_chart(cas: dict[str, Any]) -> bytes:
    """Mean test accuracy (± std over seeds) per train set, values written on the bars."""
    sets = cas["train_sets"]
    names = ordered_sets(sets)
    means = [sets[n]["summary"]["test_accuracy_mean"] for n in names]
    stds = [sets[n]["summary"]["test_accuracy_std"] for n in names]
    fig = Figure(figsize=(1.6 + 1.3 * len(names), 3.2))
    ax = fig.subplots()
    bars = ax.bar(
        names, means, yerr=stds, capsize=4, color=[COLORS.get(n, "#8172b3") for n in names]
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
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("real test accuracy")
    ax.set_title("CAS: trained on … , tested on real")
    ax.spines[["top", "right"]].set_visible(False)
    return _figure_png(fig)


def per_class_chart(cas: dict[str, Any], class_names: list[str]) -> bytes:
    """Grouped bars: per-class test accuracy (first seed) of each train set."""
    sets = cas["train_sets"]
    k = len(class_names)
    width = 0.8 / max(1, len(sets))
    fig = Figure(figsize=(min(16, 2 + 0.45 * k * max(1, len(sets))), 3.2))
    ax = fig.subplots()
    for j, name in enumerate(ordered_sets(sets)):
        acc = [a if a is not None else 0.0 for a in sets[name]["runs"][0]["per_class_accuracy"]]
        ax.bar(
            [i + j * width for i in range(k)],
            acc,
            width,
            label=name,
            color=COLORS.get(name, "#8172b3"),
        )
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
        fontsize=8, ncols=len(sets), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False
    )
    ax.spines[["top", "right"]].set_visible(False)
    return _figure_png(fig)


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
