"""The report in a real headless Chromium (Debian's ``chromium`` package, driven by playwright):
no console or page errors, every image decoded and displayed, every section heading present."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from report_fixtures import CLASSES, make_full_run
from test_report_sections import HEADINGS, N_IMAGES

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


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    run, recipe, _ = make_full_run(tmp_path)
    report = write_report(run, recipe, CLASSES)

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

    assert errors == []
    assert all(u.startswith(("file://", "data:")) for u in requests), requests  # offline page
    assert len(images) == N_IMAGES
    for im in images:
        assert im["complete"] and im["natural"] > 0, im["alt"]  # decoded
        assert im["visible"] and im["width"] > 0 and im["height"] > 0, im["alt"]  # displayed
    found = dict(heads)
    for anchor, text in HEADINGS.items():
        assert found.get(anchor) == text
    assert title == f"synthset report: {recipe.name}"
