"""The stage table and the runner: ``synthset run`` and every verb come from ``STAGES``.

A stage's fingerprint is the recipe sections it depends on plus the digests of the files it
reads (the outputs of the stages it needs, and any input of its own). A stage whose marker
holds the current fingerprint and whose output exists is skipped; otherwise the stages it
needs are brought up to date first, then it runs and its marker is written last. So a rerun
does exactly what changed, whatever changed: a recipe value, a prompt, an image, a split.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthset import stages
from synthset.classes import ClassInfo, read_classes
from synthset.errors import SynthsetError
from synthset.plan import WorkItem, load_plan
from synthset.prompts.base import PromptRecord, load_prompts
from synthset.recipe import Recipe
from synthset.recipe.evaluate import CURATE_READS
from synthset.stages import (
    generation_config,
    generation_status,
    item_configs,
    make_generator,
    open_run,
)
from synthset.store.atomic import remove_dead_temp_files
from synthset.store.curated import KEPT_FILE
from synthset.store.digests import inputs_digest
from synthset.store.labels import LABELS_FILE
from synthset.store.labels import SUMMARY_FILE as LABELS_SUMMARY
from synthset.store.locks import run_lock
from synthset.store.manifest import Manifest
from synthset.store.retrieved import RETRIEVED_FILE
from synthset.store.retrieved import SUMMARY_FILE as RETRIEVED_SUMMARY
from synthset.store.run_folder import RunFolder

__all__ = [
    "STAGES",
    "Stage",
    "StageLog",
    "fingerprint",
    "generation_config",
    "generation_status",
    "item_configs",
    "make_generator",
    "open_run",
    "run_all",
    "run_stage",
]

RunFn = Callable[[Recipe, RunFolder, bool], dict[str, Any]]


def _never(recipe: Recipe, run: RunFolder) -> list[Path]:
    return []


def _fine(recipe: Recipe) -> None:
    return None


@dataclass(frozen=True)
class Stage:
    """One row of the stage table.

    ``sections``: the recipe parts its output depends on. ``needs``: the stages whose outputs it
    reads (for this recipe); those outputs' digests join its fingerprint, together with
    ``inputs`` (files of its own, such as a user's image folder). ``output``: the file whose
    existence says the stage is complete. ``applies``: whether this recipe has the stage.
    ``check``: a one-line error for input that would fail it, raised before any stage runs.
    ``scratch``: folders only this stage writes on this machine, where temp files of a killed
    run of it (dead writer) are removed before it runs (``images/`` sweeps its own per item)."""

    name: str
    run: RunFn
    sections: tuple[str, ...]
    output: Callable[[RunFolder], Path]
    needs: Callable[[Recipe], tuple[str, ...]] = lambda r: ()
    inputs: Callable[[Recipe, RunFolder], list[Path]] = _never
    applies: Callable[[Recipe], bool] = lambda r: True
    check: Callable[[Recipe], None] = _fine
    scratch: Callable[[RunFolder], list[Path]] = lambda run: []


def _check_labels(recipe: Recipe) -> None:
    """Label settings that name classes must name the recipe's (when they are known), and a
    detector's weights file must exist."""
    labels = recipe.labels
    if labels is None:
        return
    names = recipe.classes.names or []
    named = {"labels.attention.words": set(labels.attention.words) if labels.attention else set()}
    if labels.detector is not None:
        named["labels.detector.class_map"] = set(labels.detector.class_map.values())
        weights = Path(labels.detector.weights).expanduser()
        if not weights.is_file():
            raise SynthsetError(
                f"labels.detector.weights: {weights} does not exist; give a local weights file "
                "(nothing is downloaded)"
            )
    for field_name, given in named.items():
        unknown = sorted(given - set(names)) if names else []
        if unknown:
            raise SynthsetError(
                f"{field_name}: {', '.join(map(repr, unknown))} is not a class of this recipe "
                f"({', '.join(names[:8])}{', ...' if len(names) > 8 else ''}); use class names"
            )


def _tune(recipe: Recipe, run: RunFolder, progress: bool) -> dict[str, Any]:
    from synthset.tune.study import run_tune

    result = run_tune(recipe, run, progress)
    return {"trials": result["n_trials"], "best": result["value"]}


def _check_tune(recipe: Recipe) -> None:
    from synthset.tune.study import check_spaces

    check_spaces(recipe)


def _report(recipe: Recipe, run: RunFolder, progress: bool) -> dict[str, Any]:
    return stages.write_run_report(recipe, run, [s.name for s in STAGES])


def _report_inputs(recipe: Recipe, run: RunFolder) -> list[Path]:
    """Everything the report shows: every stage's output and marker (but its own), the prompt
    statistics, the evaluation folder, the study and the provenance."""
    outputs = [s.output(run) for s in STAGES if s.name != "report"]
    markers = [run.stage_marker(s.name) for s in STAGES if s.name != "report"]
    extra = [run.prompts_report, run.evaluate, run.tune / "trials.json", run.provenance]
    return [*outputs, *markers, *extra, *Manifest(run.manifest).files()]


def _adapt_base(recipe: Recipe, run: RunFolder) -> list[Path]:
    """The local pipeline folder a pipeline method adapts: retraining it reruns adapt (a hub
    id is pinned by the hub's own revision, not digested here)."""
    from synthset.pipeline_loading import is_local_path

    base = recipe.adapt.base if recipe.adapt is not None else None
    return [Path(base).expanduser()] if base and is_local_path(base) else []


def _kept_checkpoint_input(recipe: Recipe, run: RunFolder) -> list[Path]:
    """The kept adapt artifact the generator uses (``adapt.checkpoint``): choosing another one
    regenerates without retraining."""
    if recipe.adapt is None or recipe.adapt.checkpoint is None:
        return []
    from synthset.adapt.training import kept_checkpoint_dir

    return [kept_checkpoint_dir(run.adapt, recipe.adapt.checkpoint)]


def _samples_inversion(recipe: Recipe) -> bool:
    """Whether the plan draws its items from inverted real images (kind inversion)."""
    return recipe.generate is not None and recipe.generate.members[0].uses_inversion


def _inversion_input(recipe: Recipe, run: RunFolder) -> list[Path]:
    """A given inversion artifact's index (the adapt stage's own is read through 'adapt')."""
    if not _samples_inversion(recipe) or recipe.adapt is not None:
        return []
    from synthset.store.conditioning import INDEX_FILE

    folder = recipe.generate.members[0].inversion_dir  # type: ignore[union-attr]
    return [Path(folder) / INDEX_FILE] if folder else []


def _generator_needs(recipe: Recipe) -> tuple[str, ...]:
    """Evaluation reads the run's own images (their curated view when the recipe curates)
    unless the recipe points at an image folder."""
    ev = recipe.evaluate
    own_images = recipe.generate is not None and (ev is None or ev.synthetic_dir is None)
    if not own_images:
        return ()
    return ("generate", "curate") if recipe.curate is not None else ("generate",)


def _images_for_cas(recipe: Recipe) -> tuple[str, ...]:
    retrieved = ("retrieve",) if stages.uses_retrieved(recipe) else ()
    return (*(_generator_needs(recipe) if stages.uses_synthetic(recipe) else ()), *retrieved)


def _retrieve_needs(recipe: Recipe) -> tuple[str, ...]:
    """The pool is checked against real splits; its default counts are the synthetic set's."""
    spec = recipe.retrieve
    counts_from_synthetic = spec is not None and spec.per_class is None
    return ("classes", "data", *(_generator_needs(recipe) if counts_from_synthetic else ()))


def _retrieve_inputs(recipe: Recipe, run: RunFolder) -> list[Path]:
    """The pool (by listing), the synthetic index it counts from, and a user's extractor."""
    spec = recipe.retrieve
    if spec is None:
        return []
    counted = _synthetic_input(recipe, run) if spec.per_class is None else []
    return [Path(spec.pool), *counted, *([Path(spec.weights)] if spec.weights else [])]


def _continual_synthetic(recipe: Recipe) -> bool:
    """Does the continual stage stream synthetic images?"""
    ev = recipe.evaluate
    return ev is not None and ev.continual is not None and "synthetic" in ev.continual.train_sets


def _ood_input(recipe: Recipe) -> list[Path]:
    ood = recipe.evaluate.ood_test if recipe.evaluate is not None else None
    return [Path(ood)] if ood is not None else []


def _evaluate_inputs(recipe: Recipe, run: RunFolder) -> list[Path]:
    """The synthetic index (when CAS trains on synthetic images) and the out-of-domain folder."""
    synthetic = _synthetic_input(recipe, run) if stages.uses_synthetic(recipe) else []
    return [*synthetic, *_ood_input(recipe)]


def _continual_inputs(recipe: Recipe, run: RunFolder) -> list[Path]:
    """The synthetic index (when a stream is synthetic) and the out-of-domain test folder."""
    synthetic = _synthetic_input(recipe, run) if _continual_synthetic(recipe) else []
    return [*synthetic, *_ood_input(recipe)]


def _continual_needs(recipe: Recipe) -> tuple[str, ...]:
    return _generator_needs(recipe) if _continual_synthetic(recipe) else ()


def _synthetic_input(recipe: Recipe, run: RunFolder) -> list[Path]:
    ev = recipe.evaluate
    return [Path(ev.synthetic_dir)] if ev is not None and ev.synthetic_dir is not None else []


STAGES: tuple[Stage, ...] = (
    Stage(
        "classes",
        stages.make_classes,
        sections=("classes",),
        output=lambda run: run.classes,
    ),
    Stage(
        "data",
        stages.split_real,
        sections=("classes", "real"),
        output=lambda run: run.real / "splits.json",
        needs=lambda r: ("classes",),
        applies=lambda r: r.real is not None,
        scratch=lambda run: [run.real],
    ),
    Stage(
        "adapt",
        stages.adapt_model,
        sections=("classes", "real", "adapt"),
        output=lambda run: run.adapt,
        needs=lambda r: ("classes", "data", *(("prompts",) if r.adapt.uses_captions else ())),
        inputs=_adapt_base,
        applies=lambda r: r.adapt is not None,
    ),
    Stage(
        "prompts",
        stages.write_prompts,
        sections=("classes", "prompts"),
        output=lambda run: run.prompts,
        needs=lambda r: ("classes",),
        applies=lambda r: r.generate is not None,
    ),
    Stage(
        "plan",
        stages.write_plan,
        sections=("classes", "prompts", "generate"),
        output=lambda run: run.plan,
        needs=lambda r: (
            "classes",
            "prompts",
            "data",
            *(("adapt",) if _samples_inversion(r) else ()),
        ),
        inputs=_inversion_input,
        applies=lambda r: r.generate is not None,
    ),
    Stage(
        "generate",
        stages.generate_images,
        sections=("generate", "labels.method", "labels.attention"),
        output=lambda run: run.images / "metadata.jsonl",
        inputs=_kept_checkpoint_input,
        needs=lambda r: ("plan", "adapt"),
        applies=lambda r: r.generate is not None,
    ),
    Stage(
        "curate",
        stages.curate_synthetic,
        sections=(
            "classes",
            "real",
            "adapt.real_subset",
            "curate",
            *(f"evaluate.{f}" for f in CURATE_READS),
        ),
        output=lambda run: run.curate / KEPT_FILE,
        needs=lambda r: ("classes", "data", "generate"),
        applies=lambda r: r.curate is not None,
        scratch=lambda run: [run.curate, run.cache / "tensors"],
    ),
    Stage(
        "labels",
        stages.label_synthetic,
        sections=("classes", "labels"),
        output=lambda run: run.labels / LABELS_FILE,
        needs=lambda r: ("classes", "generate", *(("curate",) if r.curate is not None else ())),
        applies=lambda r: r.labels is not None,
        check=_check_labels,
        scratch=lambda run: [run.labels],
    ),
    Stage(
        "export",
        stages.export_synthetic,
        sections=("classes", "export"),
        output=lambda run: run.export / "export.json",
        needs=lambda r: (
            "classes",
            "generate",
            *(("curate",) if r.curate is not None else ()),
            *(("labels",) if r.labels is not None else ()),
        ),
        applies=lambda r: r.export is not None and bool(r.export.formats),
        scratch=lambda run: [run.export],
    ),
    Stage(
        "retrieve",
        stages.retrieve_pool,
        sections=("classes", "real", "retrieve"),
        output=lambda run: run.retrieve / RETRIEVED_FILE,
        needs=_retrieve_needs,
        inputs=_retrieve_inputs,
        applies=lambda r: r.retrieve is not None,
        scratch=lambda run: [run.retrieve],
    ),
    Stage(
        "evaluate",
        stages.evaluate_cas,
        sections=("classes", "real", "evaluate"),
        output=lambda run: run.evaluate / "cas.json",
        needs=lambda r: ("classes", "data", *_images_for_cas(r)),
        inputs=_evaluate_inputs,
        applies=lambda r: r.evaluate is not None,
        scratch=lambda run: [run.evaluate, run.cache / "tensors"],
    ),
    Stage(
        "fidelity",
        stages.measure_fidelity,
        sections=("classes", "real", "evaluate", "evaluate.fidelity"),
        output=lambda run: run.evaluate / "fidelity.json",
        needs=lambda r: ("classes", "data", *_generator_needs(r)),
        inputs=_synthetic_input,
        scratch=lambda run: [run.evaluate, run.cache / "tensors"],
        applies=lambda r: (
            r.evaluate is not None
            and r.evaluate.fidelity.enabled
            and (r.generate is not None or r.evaluate.synthetic_dir is not None)
        ),
    ),
    Stage(
        "continual",
        stages.learn_continually,
        sections=("classes", "real", "evaluate", "evaluate.continual"),
        output=lambda run: run.evaluate / "continual.json",
        needs=lambda r: ("classes", "data", *_continual_needs(r)),
        inputs=_continual_inputs,
        scratch=lambda run: [run.evaluate, run.cache / "tensors"],
        applies=lambda r: r.evaluate is not None and r.evaluate.continual is not None,
    ),
    Stage(
        "tune",
        _tune,
        sections=("classes", "real", "adapt", "prompts", "generate", "curate", "evaluate", "tune"),
        output=lambda run: run.tune / "best.json",
        needs=lambda r: ("classes", "data", "adapt", "prompts"),
        applies=lambda r: r.tune is not None,
        check=_check_tune,
    ),
    Stage(
        "report",
        _report,
        sections=tuple(Recipe.model_fields),
        output=lambda run: run.report,
        needs=lambda r: ("classes",),
        inputs=_report_inputs,
        applies=lambda r: r.report.enabled,
    ),
)
_BY_NAME = {s.name: s for s in STAGES}


@dataclass
class StageLog:
    """What each stage did in this invocation: ``ran`` / ``skipped`` / ``off`` and seconds."""

    entries: list[tuple[str, str, float]] = field(default_factory=list)
    checked: bool = False  # the recipe passed every stage's fail-fast check in this invocation

    def record(self, stage: str, status: str, seconds: float) -> None:
        self.entries.append((stage, status, seconds))

    def status(self, stage: str) -> str | None:
        """The status ``stage`` got in this invocation (None before it was looked at)."""
        return next((s for name, s, _ in self.entries if name == stage), None)


def stage(name: str) -> Stage:
    """The table row called ``name``."""
    return _BY_NAME[name]


def fingerprint(row: Stage, recipe: Recipe, run: RunFolder) -> str:
    """The row's recipe sections plus the digests of the files it reads."""
    reads = [stage(n).output(run) for n in row.needs(recipe) if stage(n).applies(recipe)]
    return recipe.fingerprint(*row.sections) + inputs_digest([*reads, *row.inputs(recipe, run)])


def is_current(row: Stage, recipe: Recipe, run: RunFolder, fp: str | None = None) -> bool:
    """Is the row's output there and made from what it reads now (``fp``: its fingerprint,
    when the caller has it already)?"""
    fp = fingerprint(row, recipe, run) if fp is None else fp
    return run.stage_done(row.name, fp) and row.output(run).exists()


def run_stage(
    name: str, recipe: Recipe, run: RunFolder, progress: bool = True, log: StageLog | None = None
) -> dict[str, Any] | None:
    """Bring the stages ``name`` needs up to date, then ``name`` itself (skipped when current).
    Returns what its marker records, or None when the recipe has no such stage."""
    log = log if log is not None else StageLog()
    row = stage(name)
    if log.status(name) is not None:  # already handled in this invocation
        return _marker(run, name) if row.applies(recipe) else None
    if not row.applies(recipe):
        log.record(name, "off", 0.0)
        return None
    if not log.checked:  # the first stage of this invocation: fail fast on bad input
        check(recipe)
        log.checked = True
    for need in row.needs(recipe):
        run_stage(need, recipe, run, progress, log)
    fp = fingerprint(row, recipe, run)
    if is_current(row, recipe, run, fp):
        log.record(name, "skipped", 0.0)
        return _marker(run, name)
    for folder in row.scratch(run):
        remove_dead_temp_files(folder)
    start = time.perf_counter()
    info = row.run(recipe, run, progress)
    seconds = time.perf_counter() - start
    log.record(name, "ran", seconds)
    if info.get("complete", True):
        run.mark_done(name, fp, **info, seconds=round(seconds, 2))
    return info


def check(recipe: Recipe) -> None:
    """Every stage's fail-fast check of the recipe (one-line errors, before any work)."""
    for row in STAGES:
        if row.applies(recipe):
            row.check(recipe)


def _marker(run: RunFolder, name: str) -> dict[str, Any]:
    try:
        return json.loads(run.stage_marker(name).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def run_all(recipe: Recipe, progress: bool = True, log: StageLog | None = None) -> RunFolder:
    """Run every stage of the table in order, skipping the current ones. The run folder takes
    one ``synthset run`` at a time: a second is refused in one line before it writes anything
    (an OS file lock, dropped by the kernel when its holder exits or is killed)."""
    log = log if log is not None else StageLog()
    check(recipe)  # before the lock and the folder: bad input writes nothing
    log.checked = True
    with run_lock(recipe.output_dir):
        run = open_run(recipe)
        for row in STAGES:
            run_stage(row.name, recipe, run, progress, log)
    return run


# ----------------------------------------------------------------------------- verbs
# Each runs one stage (and what it needs) and returns what the CLI and tests look at.


def stage_classes(recipe: Recipe, run: RunFolder) -> list[ClassInfo]:
    """The run's classes (``classes.json``)."""
    run_stage("classes", recipe, run)
    return read_classes(run.classes)


def stage_data(recipe: Recipe, run: RunFolder) -> bool:
    """Split the real images; True when the split was (re)made now."""
    log = StageLog()
    run_stage("data", recipe, run, log=log)
    return log.status("data") == "ran"


def stage_adapt(
    recipe: Recipe, run: RunFolder, progress: bool = True, shard: tuple[int, int] = (0, 1)
) -> bool:
    """Fit the adapter; True when it was (re)trained now. A shard (diffusion inversion's
    groups ``i, i+n, …``) trains its part; whichever shard finds every part done assembles the
    artifact and marks the stage done; it returns True when the artifact is complete."""
    if shard == (0, 1):
        log = StageLog()
        run_stage("adapt", recipe, run, progress, log)
        return log.status("adapt") == "ran"
    if recipe.adapt is None or recipe.adapt.method != "diffusion_inversion":
        raise SynthsetError(
            "adapt --shard: only adapt.method diffusion_inversion splits into independent jobs; "
            "run 'synthset adapt' without --shard"
        )
    row = stage("adapt")
    if not all(is_current(stage(n), recipe, run) for n in row.needs(recipe)):
        raise SynthsetError(
            "adapt --shard: run 'synthset data' once before launching shards (every shard "
            "reads the same split)"
        )
    if is_current(row, recipe, run):
        return True
    info = stages.adapt_model(recipe, run, progress, shard)
    if info["complete"]:
        run.mark_done("adapt", fingerprint(row, recipe, run), **info)
    return bool(info["complete"])


def stage_prompts(recipe: Recipe, run: RunFolder) -> list[PromptRecord]:
    """The prompts of every class (``prompts.jsonl``)."""
    run_stage("prompts", recipe, run)
    return load_prompts(run.prompts)


def stage_plan(recipe: Recipe, run: RunFolder) -> list[WorkItem]:
    """The work items (``plan.jsonl``); [] without a ``generate`` section."""
    if run_stage("plan", recipe, run) is None:
        return []
    return load_plan(run.plan)


def shard_prerequisites(recipe: Recipe) -> list[str]:
    """The stages every generate shard reads, to finish once before shards start."""
    return [*(["adapt"] if recipe.adapt is not None else []), "plan"]


def stage_generate(
    recipe: Recipe, run: RunFolder, shard: tuple[int, int] = (0, 1), progress: bool = True
) -> dict[str, Any]:
    """Generate this shard's unfinished items; when the whole plan is finished the set's index
    (``images/metadata.jsonl``) is written and the stage marked done."""
    if recipe.generate is None:
        raise SynthsetError("generate: the recipe has no 'generate' section; add one")
    if shard == (0, 1):
        log = StageLog()
        info = run_stage("generate", recipe, run, progress, log) or {}
        if log.status("generate") == "skipped":
            info |= {"generated": 0, "skipped": info.get("planned", 0)}
        return {"complete": True} | info
    # shards may run at once on many nodes: the shared stages must be finished first
    if not all(is_current(stage(n), recipe, run) for n in shard_prerequisites(recipe)):
        raise SynthsetError(
            "generate --shard: run 'synthset plan' (and 'synthset adapt' when the recipe adapts "
            "a model) once before launching shards"
        )
    row = stage("generate")
    info = stages.generate_images(recipe, run, progress, shard)
    if info["complete"]:
        run.mark_done("generate", fingerprint(row, recipe, run), **info)
    return info


def stage_curate(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any] | None:
    """Score the synthetic images and write the kept view (``curate/kept.jsonl``), generating
    first what is missing; its summary (``curate/curate.json``), None without a curate section."""
    if run_stage("curate", recipe, run, progress) is None:
        return None
    return json.loads((run.curate / "curate.json").read_text())


def stage_label(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any] | None:
    """Label the kept synthetic images (``labels/labels.jsonl``), generating (and curating)
    first what is missing; the summary (``labels/labels.json``), None without labels."""
    if run_stage("labels", recipe, run, progress) is None:
        return None
    return json.loads((run.labels / LABELS_SUMMARY).read_text())


def stage_export(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any] | None:
    """Write the kept synthetic images in the recipe's export formats, generating (and curating)
    first what is missing; the summary (``export/export.json``), None without formats."""
    if run_stage("export", recipe, run, progress) is None:
        return None
    return json.loads((run.export / "export.json").read_text())


def stage_evaluate(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any] | None:
    """CAS (``evaluate/cas.json``), then the fidelity metrics when their images are there
    without generating only for them; None without an ``evaluate`` section."""
    if run_stage("evaluate", recipe, run, progress) is None:
        return None
    fidelity = stage("fidelity")
    if fidelity.applies(recipe) and all(p.exists() for p in _fidelity_reads(recipe, run)):
        run_stage("fidelity", recipe, run, progress)
    run_stage("continual", recipe, run, progress)
    return json.loads((run.evaluate / "cas.json").read_text())


def stage_retrieve(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any] | None:
    """Real images retrieved per class from the pool (``retrieve/summary.json``); None without
    a ``retrieve`` section."""
    if run_stage("retrieve", recipe, run, progress) is None:
        return None
    return json.loads((run.retrieve / RETRIEVED_SUMMARY).read_text())


def stage_continual(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any] | None:
    """Online continual learning on streams of the classes (``evaluate/continual.json``);
    None without ``evaluate.continual``."""
    if run_stage("continual", recipe, run, progress) is None:
        return None
    return json.loads((run.evaluate / "continual.json").read_text())


def _fidelity_reads(recipe: Recipe, run: RunFolder) -> list[Path]:
    needs = [stage(n).output(run) for n in stage("fidelity").needs(recipe)]
    return [*needs, *_synthetic_input(recipe, run)]


def stage_fidelity(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any] | None:
    """The fidelity metrics (``evaluate/fidelity.json``), generating the images they need;
    None when disabled or the recipe has no synthetic images."""
    if run_stage("fidelity", recipe, run, progress) is None:
        return None
    return json.loads((run.evaluate / "fidelity.json").read_text())


def stage_tune(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any] | None:
    """The Optuna study of ``recipe.tune`` (None without one); a finished study is not redone."""
    if run_stage("tune", recipe, run, progress) is None:
        return None
    return json.loads((run.tune / "best.json").read_text())


def stage_report(recipe: Recipe, run: RunFolder) -> Path | None:
    """Write ``report.html`` (None when the recipe disables it)."""
    if run_stage("report", recipe, run) is None:
        return None
    return run.report
