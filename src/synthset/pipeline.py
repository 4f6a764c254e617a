"""The stages, each a plain function of (recipe, run folder), and ``run_all`` that chains them.

A stage reads the previous stages' files and writes its own; it is skipped when its output is
complete for the same recipe fingerprint, so ``synthset run`` resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthset.classes import ClassInfo, read_classes, resolve_classes, write_classes
from synthset.errors import SynthsetError
from synthset.plan import WorkItem, build_plan, load_plan, save_plan
from synthset.prompts.base import PromptRecord, load_prompts, save_prompts
from synthset.recipe import GenerateSpec, GeneratorSpec, Recipe, dump_recipe
from synthset.store.atomic import atomic_write_json, atomic_write_text
from synthset.store.imagefolder import write_metadata
from synthset.store.manifest import Manifest
from synthset.store.run_folder import RunFolder

if TYPE_CHECKING:
    from synthset.generators.base import Generator

STAGES = ("classes", "data", "adapt", "prompts", "plan", "generate", "evaluate", "report")


@dataclass
class StageLog:
    """What each stage did in this invocation: ``ran`` / ``skipped`` and seconds."""

    entries: list[tuple[str, str, float]] = field(default_factory=list)

    def record(self, stage: str, status: str, seconds: float) -> None:
        self.entries.append((stage, status, seconds))


def open_run(recipe: Recipe) -> RunFolder:
    """Create the run folder and write the resolved recipe and provenance into it."""
    run = RunFolder(recipe.output_dir)
    run.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.recipe, dump_recipe(recipe))
    atomic_write_json(run.provenance, provenance())
    return run


def provenance() -> dict[str, Any]:
    """Library versions and machine facts (no git, no secrets, no environment variables)."""
    versions = {}
    for pkg in ("synthset", "torch", "torchvision", "diffusers", "transformers", "numpy", "pillow"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    import torch

    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
        "cuda": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- stages


def stage_classes(recipe: Recipe, run: RunFolder) -> list[ClassInfo]:
    """Resolve class names and their safe folder names into ``classes.json``."""
    fp = recipe.fingerprint("classes")
    if run.stage_done("classes", fp) and run.classes.exists():
        return read_classes(run.classes)
    classes = resolve_classes(recipe.classes)
    write_classes(run.classes, classes)
    run.mark_done("classes", fp)
    return classes


def stage_data(recipe: Recipe, run: RunFolder) -> bool:
    """Split the real images into train / val / test (``real/splits.json``)."""
    if recipe.real is None:
        return False
    fp = recipe.fingerprint("classes", "real")
    if run.stage_done("data", fp):
        return False
    from synthset.data.real import prepare_real_data

    prepare_real_data(recipe.real, stage_classes(recipe, run), run.real, recipe.seed)
    run.mark_done("data", fp)
    return True


def stage_adapt(recipe: Recipe, run: RunFolder, progress: bool = True) -> bool:
    """Train the embedded class-conditional diffusion model on the real train split."""
    if recipe.adapt is None:
        return False
    fp = recipe.fingerprint("classes", "real", "adapt")
    if run.stage_done("adapt", fp) and run.adapt.exists():
        return False
    from synthset.adapt.tiny_diffusion import train_tiny_diffusion
    from synthset.data.splits import load_splits

    stage_data(recipe, run)
    classes = stage_classes(recipe, run)
    train = load_splits(run.real / "splits.json")["train"]
    train_tiny_diffusion(recipe.adapt, train, len(classes), run.adapt, recipe.seed, progress)
    run.mark_done("adapt", fp)
    return True


def stage_prompts(recipe: Recipe, run: RunFolder) -> list[PromptRecord]:
    """Write ``prompts.jsonl`` (and ``prompts_report.json``): the prompts of every class."""
    fp = recipe.fingerprint("classes", "prompts")
    if run.stage_done("prompts", fp) and run.prompts.exists():
        return load_prompts(run.prompts)
    from synthset.prompts.base import collect_prompts
    from synthset.prompts.diversity import diversity_report
    from synthset.prompts.registry import build_strategy

    classes = stage_classes(recipe, run)
    spec = recipe.prompts
    strategy = build_strategy(spec, run.cache / "llm")
    records, stats = collect_prompts(
        strategy,
        classes,
        spec,
        recipe.seed,
        synonyms=class_synonyms(recipe),
        descriptions=dict(recipe.classes.descriptions),
    )
    empty = [c.name for c in classes if not any(r.class_id == c.id for r in records)]
    if empty:
        raise SynthsetError(
            f"prompts: no usable prompt for class {empty[0]!r} ({len(empty)} classes empty); "
            "check prompts.strategy and its source, or set prompts.label_check: repair"
        )
    save_prompts(run.prompts, records)
    report = {
        "strategy": spec.strategy,
        "per_class_target": spec.per_class,
        "label_check": spec.label_check,
        "stats": {name: vars(st) for name, st in stats.items()},
        "diversity": diversity_report(records, spec.diversity_model),
    }
    atomic_write_json(run.prompts_report, report)
    run.mark_done("prompts", fp, prompts=len(records))
    return records


def class_synonyms(recipe: Recipe) -> dict[str, list[str]]:
    """Synonyms per class name: shipped defaults for known lists, then the recipe's own."""
    from synthset.classes import default_synonyms

    merged = {k: list(v) for k, v in default_synonyms(recipe.classes).items()}
    for name, more in recipe.classes.synonyms.items():
        merged[name] = [*merged.get(name, []), *more]
    return merged


def stage_plan(recipe: Recipe, run: RunFolder) -> list[WorkItem]:
    """Write ``plan.jsonl``: every work item with its fixed seed."""
    if recipe.generate is None:
        return []
    from_real = recipe.generate.members[0].uses_real_images
    fp = recipe.fingerprint("classes", "prompts", "generate", *(["real"] if from_real else []))
    if run.stage_done("plan", fp) and run.plan.exists():
        return load_plan(run.plan)
    records = stage_prompts(recipe, run)
    prompts: dict[int, list[str]] = {}
    for rec in records:
        prompts.setdefault(rec.class_id, []).append(rec.prompt)
    real = None
    if from_real and recipe.real is not None:
        from synthset.data.splits import load_splits

        stage_data(recipe, run)
        real = load_splits(run.real / "splits.json")["train"]
    items = build_plan(recipe, stage_classes(recipe, run), prompts, real, run.root)
    save_plan(run.plan, items)
    run.mark_done("plan", fp, items=len(items))
    return items


def generation_config(recipe: Recipe) -> str:
    """What an image depends on besides its item: a changed value regenerates the item."""
    g = recipe.generate
    if g is None:
        return "none"
    if g.generators is None:
        return _config_hash(recipe, g.generator.model_dump(mode="json"), g.generator.kind)
    return _config_hash(recipe, sorted(item_configs(recipe).items()), "ensemble")


def item_configs(recipe: Recipe) -> str | dict[str, str]:
    """The fingerprint recorded with each image: :func:`generation_config`, or for an ensemble
    one per member name (editing one member regenerates only that member's images)."""
    g = recipe.generate
    if g is None or g.generators is None:
        return generation_config(recipe)
    return {m.name: _config_hash(recipe, m.model_dump(mode="json"), m.kind) for m in g.generators}


def _config_hash(recipe: Recipe, generator: Any, kind: str) -> str:
    g = recipe.generate
    assert g is not None
    parts = {
        "generator": generator,
        "batch_size": g.batch_size,
        "format": [g.image_format, g.jpeg_quality],
        "adapt": recipe.fingerprint("classes", "real", "adapt") if kind == "tiny" else None,
    }
    if g.members[0].uses_real_images:  # the real images are inputs of every item
        parts["real"] = recipe.fingerprint("classes", "real")
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def generation_status(recipe: Recipe, run: RunFolder) -> tuple[int, int]:
    """(finished, planned) items for the current plan and generation settings."""
    from synthset.executors.local import finished_ids

    if not run.plan.exists():
        return 0, 0
    plan = load_plan(run.plan)
    config = item_configs(recipe)
    return len(finished_ids(Manifest(run.manifest), plan, config)), len(plan)


def stage_generate(
    recipe: Recipe, run: RunFolder, shard: tuple[int, int] = (0, 1), progress: bool = True
) -> dict[str, Any]:
    """Generate this shard's unfinished items into the store; when the whole plan is finished,
    write ``images/metadata.jsonl``."""
    from synthset.executors.local import finished_entries, run_generation

    spec = recipe.generate
    if spec is None:
        raise SynthsetError("generate: the recipe has no 'generate' section; add one")
    needs_model = any(m.kind == "tiny" and m.model is None for m in spec.members)
    shared_missing = not run.plan.exists() or (
        needs_model and not run.stage_marker("adapt").exists()
    )
    if shard != (0, 1) and shared_missing:
        # shards may run at once on many nodes: the shared stages must be finished first
        raise SynthsetError(
            "generate --shard: run 'synthset plan' (and 'synthset adapt' for the tiny model) "
            "once before launching shards"
        )
    plan = stage_plan(recipe, run)
    if needs_model:
        stage_adapt(recipe, run, progress)
    manifest = Manifest(run.manifest, shard)
    config = item_configs(recipe)
    result = run_generation(
        plan,
        lambda: make_generator(spec, run),
        spec,
        run.images,
        manifest,
        config,
        shard=shard,
        progress=progress,
    )
    done = finished_entries(manifest, plan, config)
    complete = len(done) == len(plan)
    if complete:
        write_metadata(run.images, [done[it.item_id] for it in plan])
    return {
        "generated": result.generated,
        "skipped": result.skipped,
        "finished": len(done),
        "planned": len(plan),
        "complete": complete,
        "seconds": result.seconds,
    }


def make_generator(spec: GenerateSpec, run: RunFolder) -> Generator:
    """The recipe's generator, or an ensemble that loads each member on first use."""
    from synthset.generators.base import build_generator

    if spec.generators is None:
        return build_generator(spec.generator, run.adapt, run.root)
    from synthset.generators.ensemble import EnsembleGenerator

    members: dict[str, GeneratorSpec] = {m.name: m for m in spec.generators}
    return EnsembleGenerator(members, lambda m: build_generator(m, run.adapt, run.root))


def synthetic_samples(run: RunFolder) -> list[tuple[Path, int]]:
    """(path, label) of every finished synthetic image, from ``images/metadata.jsonl``."""
    from synthset.store.atomic import read_jsonl

    meta = run.images / "metadata.jsonl"
    if not meta.exists():
        raise SynthsetError(
            f"no finished synthetic dataset in {run.images}: run 'synthset generate' until the "
            "plan is complete"
        )
    return [(run.images / r["file_name"], int(r["label"])) for r in read_jsonl(meta)]


def synthetic_set(
    recipe: Recipe,
    run: RunFolder,
    classes: list[ClassInfo],
    progress: bool = True,
    generate: bool = True,
) -> list[tuple[Path, int]] | None:
    """The synthetic images evaluation reads: ``evaluate.synthetic_dir`` when set, else the
    run's own (with ``generate``, generated first when unfinished); None when there are none."""
    from synthset.data.splits import scan_imagefolder

    spec = recipe.evaluate
    assert spec is not None
    if spec.synthetic_dir is not None:
        lookup = {c.folder: c.id for c in classes} | {c.name: c.id for c in classes}
        return scan_imagefolder(spec.synthetic_dir, lookup, "evaluate.synthetic_dir")
    if recipe.generate is None:
        return None
    if generate:
        stage_generate(recipe, run, progress=progress)
    elif not (run.images / "metadata.jsonl").exists():
        return None
    return synthetic_samples(run)


def _reads_digest(recipe: Recipe, run: RunFolder) -> str:
    """The digest of the files evaluation reads: the class list, the real splits and the
    synthetic set's index (its metadata, or the listing of ``evaluate.synthetic_dir``)."""
    from synthset.store.digests import inputs_digest

    spec = recipe.evaluate
    synthetic = spec.synthetic_dir if spec is not None and spec.synthetic_dir else None
    index = Path(synthetic) if synthetic is not None else run.images / "metadata.jsonl"
    return inputs_digest([run.classes, run.real / "splits.json", index])


def stage_evaluate(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any] | None:
    """CAS: train on real / synthetic / both, test on the held-out real test split."""
    if recipe.evaluate is None:
        return None
    from synthset.data.splits import load_splits
    from synthset.evaluate.cas import run_cas
    from synthset.evaluate.trackers import build_trackers, epoch_logger

    spec = recipe.evaluate
    stage_data(recipe, run)
    classes = stage_classes(recipe, run)
    wanted = any("synthetic" in s for s in spec.train_sets)
    synthetic = synthetic_set(recipe, run, classes, progress, generate=wanted) if wanted else None
    fp = recipe.fingerprint("classes", "real", "evaluate") + _reads_digest(recipe, run)
    result_path = run.evaluate / "cas.json"
    if run.stage_done("evaluate", fp) and result_path.exists():
        stage_fidelity(recipe, run, progress, generate=False)
        return json.loads(result_path.read_text())
    real = load_splits(run.real / "splits.json")
    synthetic = synthetic or []
    names = [c.name for c in classes]
    cache = run.cache / "tensors"
    (run.evaluate / "metrics.jsonl").unlink(missing_ok=True)  # a rerun logs afresh
    tracker = build_trackers(spec.trackers, run.root, recipe.model_dump(mode="json"))
    try:
        result = run_cas(
            spec, real, synthetic, names, run.evaluate, progress, epoch_logger(tracker), cache
        )
    finally:
        tracker.close()
    run.mark_done("evaluate", fp)
    stage_fidelity(recipe, run, progress, generate=False)
    return result


def stage_fidelity(
    recipe: Recipe, run: RunFolder, progress: bool = True, generate: bool = True
) -> dict[str, Any] | None:
    """FID, KID, precision/recall, density/coverage, diversity and CLIP score of the synthetic
    images against real ones (``evaluate/fidelity.json``); None when disabled or no images.
    With ``generate=False`` missing synthetic images are not generated (None instead)."""
    spec = recipe.evaluate
    if spec is None or not spec.fidelity.enabled:
        return None
    from synthset.data.splits import load_splits
    from synthset.evaluate.fidelity import prompts_from_metadata, run_fidelity

    classes = stage_classes(recipe, run)
    synthetic = synthetic_set(recipe, run, classes, progress, generate=generate)
    if synthetic is None:
        return None
    stage_data(recipe, run)
    own = json.dumps(spec.fidelity.model_dump(mode="json"), sort_keys=True).encode()
    fp = recipe.fingerprint("classes", "real", "evaluate") + _reads_digest(recipe, run)
    fp += hashlib.sha256(own).hexdigest()[:16]
    result_path = run.evaluate / "fidelity.json"
    if run.stage_done("fidelity", fp) and result_path.exists():
        return json.loads(result_path.read_text())
    folder = spec.synthetic_dir if spec.synthetic_dir is not None else run.images
    prompts = prompts_from_metadata(folder)
    real = load_splits(run.real / "splits.json")
    names = [c.name for c in classes]
    result = run_fidelity(spec, real, synthetic, prompts, names, run.evaluate, progress)
    run.mark_done("fidelity", fp)
    return result


def stage_tune(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any] | None:
    """The Optuna study of ``recipe.tune`` (None without one); a finished study is not redone.
    Returns the best result plus ``generated``: the trials this call finished."""
    if recipe.tune is None:
        return None
    from synthset.evaluate.tune import run_tune, tune_folder

    trials = tune_folder(run) / "trials.json"
    before = _finished_trials(trials)
    result = run_tune(recipe, progress)
    return result | {"generated": _finished_trials(trials) - before}


def _finished_trials(path: Path) -> int:
    if not path.exists():
        return 0
    rows = json.loads(path.read_text())
    return sum(1 for r in rows if r.get("state") in ("COMPLETE", "PRUNED"))


def stage_report(recipe: Recipe, run: RunFolder) -> Path | None:
    """Write ``report.html``."""
    if not recipe.report.enabled:
        return None
    from synthset.report.html import write_report

    return write_report(run, recipe, stage_classes(recipe, run))


# ----------------------------------------------------------------------------- chaining


def run_all(recipe: Recipe, progress: bool = True, log: StageLog | None = None) -> RunFolder:
    """Run every stage in order, skipping the finished ones."""
    run = open_run(recipe)
    log = log if log is not None else StageLog()
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("classes", lambda: stage_classes(recipe, run)),
        ("data", lambda: stage_data(recipe, run)),
        ("adapt", lambda: stage_adapt(recipe, run, progress)),
        ("prompts", lambda: stage_prompts(recipe, run) if recipe.generate else None),
        ("plan", lambda: stage_plan(recipe, run)),
        (
            "generate",
            lambda: stage_generate(recipe, run, progress=progress) if recipe.generate else None,
        ),
        ("evaluate", lambda: stage_evaluate(recipe, run, progress)),
        ("tune", lambda: stage_tune(recipe, run, progress)),
        ("report", lambda: stage_report(recipe, run)),
    ]
    for name, step in steps:
        marker = run.stage_marker(name)
        before = marker.stat().st_mtime_ns if marker.exists() else None
        start = time.perf_counter()
        out = step()
        seconds = time.perf_counter() - start
        if name in ("generate", "tune"):
            ran = out is not None and out["generated"] > 0
        elif name == "report" or out is None:
            ran = out is not None
        else:
            ran = marker.exists() and marker.stat().st_mtime_ns != before
        log.record(name, "ran" if ran else "skipped", seconds)
        if ran and marker.exists():  # the report's stage table shows how long it took
            info = json.loads(marker.read_text())
            atomic_write_json(marker, info | {"seconds": round(seconds, 2)})
    return run
