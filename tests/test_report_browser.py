"""The report in a real headless Chromium (Debian's ``chromium`` package, driven by playwright):
no console or page errors, every image decoded and displayed, every section heading present."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import (
    FULL_REPORT_IMAGES,
    REPORT_CLASSES,
    REPORT_HEADINGS,
    make_full_run,
    make_run,
)

from synthset.data.splits import load_splits
from synthset.evaluate.cas import run_cas
from synthset.recipe import EvaluateSpec
from synthset.report.html import write_report

CHROMIUM = os.environ.get("SYNTHSET_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip(
        "chromium is not installed (apt-get install chromium); under CI this test always runs",
        allow_module_level=True,
    )

from playwright.sync_api import sync_playwright  # noqa: E402  (the test extra installs it)

IMAGES = """() => Array.from(document.images).map(img => {
    const box = img.getBoundingClientRect();
    const style = getComputedStyle(img);
    return {alt: img.alt, complete: img.complete, natural: img.naturalWidth,
            width: box.width, height: box.height,
            visible: style.display !== "none" && style.visibility !== "hidden"};
})"""


def _open(report: Path) -> dict:
    """Load ``report`` in Chromium; what the page logged, requested and displayed."""
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page()
            page.on(
                "console",
                lambda m: (
                    errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
                ),
            )
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.resolve().as_uri(), wait_until="load")
            # <details> content is hidden until opened: open all so every image can be measured
            page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")
            images = page.evaluate(IMAGES)
            heads = page.eval_on_selector_all("h2", "els => els.map(e => [e.id, e.textContent])")
            title = page.title()
        finally:
            browser.close()
    return {
        "errors": errors,
        "requests": requests,
        "images": images,
        "heads": dict(heads),
        "title": title,
    }


def _check_loaded(page: dict) -> None:
    assert page["errors"] == []
    offline = [u for u in page["requests"] if not u.startswith(("file://", "data:"))]
    assert offline == []
    for im in page["images"]:
        assert im["complete"] and im["natural"] > 0, im["alt"]  # decoded
        assert im["visible"] and im["width"] > 0 and im["height"] > 0, im["alt"]  # displayed


def test_full_report_renders_in_chromium(tmp_path: Path) -> None:
    run, recipe, _ = make_full_run(tmp_path)
    page = _open(write_report(run, recipe, REPORT_CLASSES))
    _check_loaded(page)
    assert len(page["images"]) == FULL_REPORT_IMAGES
    for anchor, text in REPORT_HEADINGS.items():
        assert page["heads"].get(anchor) == text
    assert page["title"] == f"synthset report: {recipe.name}"


def test_report_of_a_real_cas_run_renders_in_chromium(tmp_path: Path) -> None:
    run, recipe = make_run(tmp_path)
    real = load_splits(run.real / "splits.json")
    synthetic = [
        (run.images / f"{c.folder}/item{k}.png", c.id) for c in REPORT_CLASSES for k in range(6)
    ]
    spec = EvaluateSpec(epochs=2, batch_size=8, device="cpu")
    run_cas(spec, real, synthetic, [c.name for c in REPORT_CLASSES], run.evaluate, progress=False)
    page = _open(write_report(run, recipe, REPORT_CLASSES))
    _check_loaded(page)
    assert len(page["images"]) == 2 + 3 + 1 + 2 * len(REPORT_CLASSES)
    assert {"run", "cas", "per-class", "confusion", "curves", "samples", "provenance"} <= set(
        page["heads"]
    )
    assert "fidelity" not in page["heads"] and "tuning" not in page["heads"]
