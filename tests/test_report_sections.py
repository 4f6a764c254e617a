"""Every report section from a full run folder in the shared formats; missing or broken files
leave their section out instead of failing."""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path

import pytest
from helpers import (
    FULL_REPORT_IMAGES,
    REPORT_CLASSES,
    REPORT_HEADINGS,
    embedded_images,
    make_full_run,
)

from synthset.report.cas_data import scaling_points, subset_points, train_sets
from synthset.report.eval_sections import training_curves
from synthset.report.html import write_report
from synthset.report.plots import best_so_far, optuna_chart, scaling_chart, subset_chart


def _headings(html: str) -> dict[str, str]:
    return dict(re.findall(r'<h2 id="([^"]+)">([^<]+)</h2>', html))


def test_full_report_has_every_section(tmp_path: Path) -> None:
    run, recipe, inputs = make_full_run(tmp_path)
    html = write_report(run, recipe, REPORT_CLASSES).read_text(encoding="utf-8")
    heads = _headings(html)
    for anchor, title in REPORT_HEADINGS.items():
        assert heads.get(anchor) == escape(title), anchor
        assert f'href="#{anchor}"' in html  # listed in the navigation

    # CAS table: every train set with its numbers, sizes and seeds
    for label, entry in inputs["cas"]["train_sets"].items():
        s = entry["summary"]
        row = re.search(rf"<tr><td>{re.escape(escape(label))}</td>.*?</tr>", html)
        assert row, label
        assert f"{s['test_accuracy_mean']:.4f} ± {s['test_accuracy_std']:.4f}" in row.group(0)
        assert f"<td class=num>{s['n_real']}</td><td class=num>{s['n_synthetic']}</td>" in (
            row.group(0)
        )
        assert "<td class=num>0, 1, 2</td>" in row.group(0)

    # fidelity: headers name the extractor; per-class rows; null shown as a dash; CLIP column
    fid = inputs["fidelity"]
    ext = "<br><span class=muted>(classifier:small_cnn-real)</span>"
    names = ("FID", "KID", "precision", "recall", "density", "coverage", "label fidelity")
    for name in (*names, "diversity real"):
        assert f"<th>{name}{ext}</th>" in html
    assert "<th>CLIP score<br><span class=muted>(tiny-clip)</span></th>" in html
    assert f"{fid['overall']['fid']:.2f}" in html
    section = html.split('<h2 id="fidelity">')[1].split("<h2")[0]
    dog = re.search(r"<tr><td>cat &amp; dog</td><td class=num>([^<]+)</td>", section)
    assert dog and dog.group(1) == "–"
    b_x = re.search(r"<tr><td>&lt;b&gt;x&lt;/b&gt;</td><td class=num>([^<]+)</td>", section)
    assert b_x and b_x.group(1) == f"{fid['per_class']['<b>x</b>']['fid']:.2f}"

    # prompts: escaped, five of seven per class
    assert "<em>" not in html
    for k in range(5):
        assert f"&lt;em&gt;photo {k}&lt;/em&gt; of a cat &amp; dog" in html
    assert "photo 5" not in html

    # tuning: best params and objective from best.json, the best recipe collapsible
    best = inputs["best"]
    assert f"value {best['value']:.4f}" in html
    assert f"<td>guidance_scale</td><td class=num>{best['params']['guidance_scale']:.4g}<" in html
    assert "proxy val accuracy &lt;small_cnn&gt;" in html
    assert "name: best &lt;tuned&gt;" in html
    assert "8 trials (6 COMPLETE, 2 PRUNED)" in html

    # stages: what the markers recorded, the evaluate seconds
    assert "prompts=14" in html and "<td class=num>12.5</td>" in html
    assert "fingerprint" not in html.split('id="provenance"')[0]

    assert "mean over seeds, from evaluate/metrics.jsonl" in html

    # charts: CAS bars, scaling, subsets, per-class, 3 confusion, curves, 4 strips, Optuna
    images = embedded_images(html)
    assert len(images) == FULL_REPORT_IMAGES
    assert all(im.width > 50 and im.height > 50 for im in images)
    assert 'src="http' not in html and "<script" not in html and "<link" not in html


def test_missing_or_broken_files_leave_sections_out(tmp_path: Path) -> None:
    run, recipe, _ = make_full_run(tmp_path)
    (run.evaluate / "fidelity.json").write_text("{not json", encoding="utf-8")
    (run.root / "tune" / "trials.json").unlink()
    run.prompts.unlink()
    (run.evaluate / "metrics.jsonl").unlink()
    cas = json.loads((run.evaluate / "cas.json").read_text())
    for label in list(cas["train_sets"]):
        if label not in ("real", "synthetic"):
            del cas["train_sets"][label]
    del cas["train_sets"]["real"]["summary"]["confusion_matrix"]
    for r in cas["train_sets"]["real"]["runs"]:
        del r["confusion_matrix"]
    (run.evaluate / "cas.json").write_text(json.dumps(cas), encoding="utf-8")

    html = write_report(run, recipe, REPORT_CLASSES).read_text(encoding="utf-8")
    heads = _headings(html)
    for gone in ("fidelity", "tuning", "prompts", "scaling"):
        assert gone not in heads and f'href="#{gone}"' not in html
    assert {"run", "cas", "per-class", "confusion", "samples", "provenance"} <= set(heads)
    assert html.count("confusion matrix: ") == 1  # only "synthetic" still has a matrix
    assert "mean over seeds, from evaluate/cas.json" in html  # curves from the histories


def test_training_curves_average_seeds_and_keep_the_last_log_of_a_step() -> None:
    rows = [
        {"prefix": "real/seed0", "step": 0, "metrics": {"val_accuracy": 0.2, "val_loss": 2.0}},
        {"prefix": "real/seed1", "step": 0, "metrics": {"val_accuracy": 0.4}},
        {"prefix": "real/seed0", "step": 1, "metrics": {"val_accuracy": 0.1}},
        {"prefix": "real/seed0", "step": 1, "metrics": {"val_accuracy": 0.6}},  # resumed
        {"prefix": "synthetic x2/seed0", "step": 0, "metrics": {"val_accuracy": None}},
        {"prefix": "tune", "step": 0, "metrics": {"other": 1.0}},
        "garbage",
    ]
    curves = training_curves(rows)
    assert list(curves) == ["val_accuracy", "val_loss"]
    acc = curves["val_accuracy"]["real"]
    assert [s for s, _ in acc] == [0, 1] and acc[0][1] == pytest.approx(0.3) and acc[1][1] == 0.6
    assert curves["val_loss"] == {"real": [(0, 2.0)]}
    assert "synthetic x2" not in curves["val_accuracy"]


def test_old_cas_json_without_study_keys_is_inferred() -> None:
    def entry(acc: float, n: int) -> dict:
        summary = {"test_accuracy_mean": acc, "test_accuracy_std": 0.0, "n_train": n}
        return {"runs": [{"seed": 0, "test_accuracy": acc, "n_train": n}], "summary": summary}

    cas = {
        "train_sets": {
            "synthetic x2": entry(0.6, 40),
            "real": entry(0.9, 20),
            "real 25%": entry(0.5, 5),
            "real 25%+synthetic": entry(0.7, 25),
            "real+synthetic": entry(0.95, 40),
            "synthetic x0.5": entry(0.4, 10),
            "broken": {"runs": []},
        }
    }
    sets = train_sets(cas)
    assert [t.label for t in sets][:2] == ["real", "real+synthetic"]  # plain sets first
    assert "broken" not in [t.label for t in sets]
    kinds = {t.label: (t.kind, t.real_subset, t.synthetic_multiplier) for t in sets}
    assert kinds["synthetic x0.5"] == ("synthetic", None, 0.5)
    assert kinds["real 25%+synthetic"] == ("real+synthetic", 0.25, None)
    # no n_synthetic: the x axis falls back to the multiplier
    assert [x for x, _ in scaling_points(sets, "synthetic")] == [0.5, 2.0]
    assert [(x, t.label) for x, t in subset_points(sets, "real")] == [
        (0.25, "real 25%"),
        (1.0, "real"),
    ]
    assert scaling_chart(cas) is not None and subset_chart(cas) is not None
    plain = {"train_sets": {k: cas["train_sets"][k] for k in ("real", "real+synthetic")}}
    assert scaling_chart(plain) is None and subset_chart(plain) is None


def test_scaling_x_is_the_synthetic_image_count(tmp_path: Path) -> None:
    _, _, inputs = make_full_run(tmp_path)
    sets = train_sets(inputs["cas"])
    pts = scaling_points(sets, "synthetic")
    expected = sorted(
        s["summary"]["n_synthetic"]
        for s in inputs["cas"]["train_sets"].values()
        if s["summary"]["synthetic_multiplier"] is not None
    )
    assert [x for x, _ in pts] == expected


def test_optuna_best_so_far_and_empty_history() -> None:
    assert best_so_far([(2, 0.5), (0, 0.3), (1, 0.7), (3, 0.6)]) == [
        (0, 0.3),
        (1, 0.7),
        (2, 0.7),
        (3, 0.7),
    ]
    assert best_so_far([(0, 3.0), (1, 1.0), (2, 2.0)], maximize=False)[-1] == (2, 1.0)
    assert optuna_chart([{"number": 0, "state": "FAIL", "value": None}]) is None
    assert optuna_chart([{"number": 0, "state": "TrialState.COMPLETE", "value": 0.5}])


def test_malformed_files_never_break_the_report(tmp_path: Path) -> None:
    run, recipe, inputs = make_full_run(tmp_path)
    cas = inputs["cas"]
    cas["train_sets"]["weird"] = 5
    cas["train_sets"]["synthetic x2"]["summary"]["test_accuracy_mean"] = "abc"
    cas["train_sets"]["real 25%"]["summary"]["confusion_matrix"] = [[1, 2], [3]]
    (run.evaluate / "cas.json").write_text(json.dumps(cas), encoding="utf-8")
    (run.evaluate / "fidelity.json").write_text(json.dumps({"overall": [1, 2]}), encoding="utf-8")
    trials = [{"number": 0, "state": "COMPLETE", "value": 0.5, "params": "oops"}, 7]
    (run.root / "tune" / "trials.json").write_text(json.dumps(trials), encoding="utf-8")
    (run.root / "tune" / "best.json").write_text("[]", encoding="utf-8")
    with run.prompts.open("a", encoding="utf-8") as f:
        f.write('{"class_id": "x", "prompt": "p"}\n')

    html = write_report(run, recipe, REPORT_CLASSES).read_text(encoding="utf-8")
    heads = _headings(html)
    assert {"run", "cas", "scaling", "samples", "prompts", "tuning", "provenance"} <= set(heads)
    assert "<p class=note>" not in html  # every malformed part is skipped, no section lost
    assert "<tr><td>weird</td>" not in html and "<tr><td>synthetic x2</td>" not in html
    assert "<tr><td>real</td>" in html and "fidelity" not in heads
    assert html.rstrip().endswith("</html>")


def test_a_section_that_still_fails_becomes_a_one_line_note() -> None:
    from synthset.report.html import _guarded

    def broken() -> str:
        return {"a": 1}["<b>"]

    note = _guarded("Fidelity", broken)
    assert (
        note == "<p class=note>Fidelity: not shown, its input file is malformed (KeyError: "
        "&#x27;&lt;b&gt;&#x27;).</p>"
    )
    assert _guarded("Run", lambda: "<h2>ok</h2>") == "<h2>ok</h2>"


def test_cas_section_says_when_weights_were_averaged(tmp_path: Path) -> None:
    from synthset.report.eval_sections import cas_section

    _, _, inputs = make_full_run(tmp_path)
    cas = json.loads(json.dumps(inputs["cas"]))
    cas["config"].pop("ema_epochs", None)
    assert "EMA" not in cas_section(cas)
    cas["config"]["ema_epochs"] = 3.0
    assert "weights averaged (EMA) over about 3 epochs" in cas_section(cas)
