"""The HTML report: self-contained, escaped, with the CAS numbers and real vs synthetic samples."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from helpers import REPORT_CLASSES, embedded_images, make_run
from PIL import Image

from synthset.data.splits import load_splits
from synthset.evaluate.cas import run_cas
from synthset.recipe import EvaluateSpec
from synthset.report.html import write_report


def test_report_with_cas_is_self_contained_and_escaped(tmp_path: Path) -> None:
    run, recipe = make_run(tmp_path)
    real = load_splits(run.real / "splits.json")
    synthetic = [
        (run.images / f"{c.folder}/item{k}.png", c.id) for c in REPORT_CLASSES for k in range(6)
    ]
    spec = EvaluateSpec(epochs=2, batch_size=8, device="cpu")
    cas = run_cas(
        spec, real, synthetic, [c.name for c in REPORT_CLASSES], run.evaluate, progress=False
    )

    path = write_report(run, recipe, REPORT_CLASSES)
    assert path == run.report
    html = path.read_text(encoding="utf-8")

    for res in cas["train_sets"].values():
        s = res["summary"]
        assert f"{s['test_accuracy_mean']:.4f} ± {s['test_accuracy_std']:.4f}" in html
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "cat &amp; dog" in html
    assert "<i>" not in html and "&lt;i&gt;&lt;b&gt;x&lt;/b&gt;&lt;/i&gt; photo" in html
    assert "report &lt;test&gt;" in html and "report <test>" not in html
    assert "9.9-test" in html and "&lt;h&gt;" in html  # provenance, escaped
    assert "<details>" in html and "name: report &lt;test&gt;" in html  # recipe.yaml as written

    assert 'src="http' not in html and "<script" not in html and "<link" not in html
    images = embedded_images(html)
    # 2 charts, 3 confusion matrices, training curves, per class a real and a synthetic strip
    assert len(images) == 2 + 3 + 1 + 2 * len(REPORT_CLASSES)
    strips = images[6:]
    assert all(im.height == 64 for im in strips)  # 8×8 images upscaled, 3 per strip
    assert all(im.width == 3 * 64 + 2 * 2 for im in strips)
    tile = np.asarray(strips[1].convert("L"))[:64, :64]
    assert len(np.unique(tile[:8, :8])) == 1  # nearest-neighbour: 8×8 blocks of one value


def test_report_without_evaluation_says_so(tmp_path: Path) -> None:
    run, recipe = make_run(tmp_path)
    html = write_report(run, recipe, REPORT_CLASSES).read_text(encoding="utf-8")
    assert "Evaluation was not run" in html
    assert len(embedded_images(html)) == 2 * len(REPORT_CLASSES)  # samples still shown
    assert "12 in total" in html  # synthetic image count from metadata.jsonl


def test_report_with_missing_images_still_renders(tmp_path: Path) -> None:
    run, recipe = make_run(tmp_path)
    (run.images / "metadata.jsonl").unlink()
    (run.real / "splits.json").unlink()
    run.provenance.unlink()
    html = write_report(run, recipe, REPORT_CLASSES).read_text(encoding="utf-8")
    assert html.count("<i>none</i>") == 2 * len(REPORT_CLASSES)
    assert "No provenance.json" in html and "0 in total" in html


@pytest.mark.parametrize("name", ["real", "synthetic"])
def test_report_charts_are_pngs(tmp_path: Path, name: str) -> None:
    from synthset.report.plots import cas_bar_chart, per_class_chart

    summary = {
        "test_accuracy_mean": 0.5,
        "test_accuracy_std": 0.1,
        "best_val_accuracy_mean": 0.6,
        "n_train": 3,
        "n_seeds": 2,
    }
    cas = {
        "train_sets": {name: {"summary": summary, "runs": [{"per_class_accuracy": [0.5, None]}]}}
    }
    for png in (cas_bar_chart(cas), per_class_chart(cas, ["a", "b"])):
        img = Image.open(io.BytesIO(png))
        assert img.format == "PNG" and img.width > 100
