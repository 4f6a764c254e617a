"""Small HTML helpers shared by the report sections: every text goes through ``html.escape``."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from synthset.report.plots import data_uri


def read_json(path: Path) -> Any:
    """The parsed file, or ``None`` when it is missing or unreadable (the section is omitted)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def img(png: bytes, alt: str) -> str:
    """An inline PNG (base64 data URI), so the page needs no other file."""
    return f'<img src="{data_uri(png)}" alt="{escape(alt)}">'


def num(value: Any, digits: int = 4) -> str:
    """A number for a table cell; ``–`` for missing values."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return escape(str(value))
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def table(
    header: list[str],
    rows: list[list[str]],
    numeric_from: int = 1,
    text_columns: tuple[int, ...] = (),
    raw_header: bool = False,
) -> str:
    """A table from header names and already-rendered cells; cells from column ``numeric_from``
    on are right-aligned, except ``text_columns``. Header names are escaped unless
    ``raw_header`` (already-rendered HTML)."""
    head = "".join(f"<th>{h if raw_header else escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class=num>{c}</td>"
            if i >= numeric_from and i not in text_columns
            else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def value(v: Any) -> str:
    """A parameter value, floats to 4 significant digits, escaped."""
    return escape(f"{v:.4g}" if isinstance(v, float) else str(v))


def details(title: str, text: str) -> str:
    """A collapsed ``<pre>`` block."""
    return f"<details><summary>{escape(title)}</summary><pre>{escape(text)}</pre></details>"


def heading(anchor: str, title: str) -> str:
    return f'<h2 id="{escape(anchor)}">{escape(title)}</h2>'
