"""What each stage does, as a plain function of (recipe, run folder, progress).

A stage function reads the files the stages before it wrote and writes its own; it never runs
another stage and never decides whether it is needed: ``synthset.pipeline`` does both, from its
stage table. Each returns a small dict that goes into the stage's marker (``stages/<name>.json``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import sys
from collections.abc import Callable
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
from synthset.store.curated import KEPT_FILE, kept_of
from synthset.store.imagefolder import read_rows, read_samples, write_metadata
from synthset.store.manifest import Manifest
from synthset.store.run_folder import RunFolder

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from synthset.data.splits import Samples
    from synthset.evaluate.tensors import TensorSet
    from synthset.executors.base import GenerationResult
    from synthset.generators.base import Generator


def open_run(recipe: Recipe) -> RunFolder:
    """Create the run folder and write the resolved recipe and provenance into it."""
    run = RunFolder(recipe.output_dir)
    try:
        run.root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SynthsetError(
            f"output_dir {run.root}: is a file or lies under one; give a folder path (--out)"
        ) from None
    except PermissionError:
        raise SynthsetError(
            f"output_dir {run.root}: no permission to create it; give a writable folder (--out)"
        ) from None
    atomic_write_text(run.recipe, dump_recipe(recipe))
    facts = provenance()
    old = _read_json(run.provenance)
    if not (isinstance(old, dict) and {**old, "created": None} == {**facts, "created": None}):
        atomic_write_json(run.provenance, facts)  # kept while nothing but the time differs
    return run


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


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


# ----------------------------------------------------------------------------- classes, data


def make_classes(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any]:
    """Resolve class names and their safe folder names into ``classes.json``."""
    classes = resolve_classes(recipe.classes)
    write_classes(run.classes, classes)
    return {"classes": len(classes)}


def split_real(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any]:
    """Split the real images into train / val / test (``real/splits.json``)."""
    from synthset.data.real import prepare_real_data

    assert recipe.real is not None
    prepare_real_data(recipe.real, read_classes(run.classes), run.real, recipe.seed)
    return {}


def real_train(run: RunFolder) -> Samples:
    """The real train split the data stage wrote."""
    from synthset.data.splits import load_splits

    return load_splits(run.real / "splits.json")["train"]


# ----------------------------------------------------------------------------- adapt


def adapt_model(
    recipe: Recipe, run: RunFolder, progress: bool = True, shard: tuple[int, int] = (0, 1)
) -> dict[str, Any]:
    """Fit the recipe's adapter (``adapt.method``) on the real train split (``adapt.real_subset``
    of it) into ``adapt/``; the val split gives the validation loss, the prompts stage the
    captions of methods that train on text."""
    from synthset.adapt.base import AdaptData
    from synthset.adapt.registry import build_adapter
    from synthset.data.splits import load_splits

    assert recipe.adapt is not None
    splits = load_splits(run.real / "splits.json", names=("train", "val"))
    prompts = None
    if recipe.adapt.uses_captions:
        from synthset.prompts.base import load_prompts

        prompts = prompts_by_class(load_prompts(run.prompts))
    classes = read_classes(run.classes)
    data = AdaptData.for_spec(recipe.adapt, splits["train"], classes, splits["val"], prompts)
    adapter = build_adapter(recipe.adapt)
    if shard == (0, 1):
        adapter.fit(data, run.adapt, recipe.seed, progress)
        complete = True
    else:  # only diffusion inversion shards (stage_adapt checks)
        complete = adapter.fit(data, run.adapt, recipe.seed, progress, shard=shard)  # type: ignore[call-arg]
    return {"method": recipe.adapt.method, "train_images": len(data.train), "complete": complete}


def kept_checkpoint(out_dir: Path, step: int) -> Path:
    """The artifact the adapt stage kept at ``step`` (``adapt.checkpoint``), one line of error
    naming the kept steps when there is none."""
    from synthset.adapt.training import checkpoints_dir, kept_checkpoint_dir

    folder = checkpoints_dir(out_dir)
    path = kept_checkpoint_dir(out_dir, step)
    if not path.is_dir():
        kept = sorted(int(p.name[5:]) for p in folder.glob("step-*")) if folder.is_dir() else []
        raise SynthsetError(
            f"adapt.checkpoint: no artifact kept at step {step} in {folder} (kept: "
            f"{kept or 'none'}); rerun adapt with keep_checkpoints: true or pick a kept step"
        )
    return path


def adapted_spec(spec: GeneratorSpec, recipe: Recipe, out_dir: Path) -> GeneratorSpec:
    """``spec`` with the fields the adapter's artifact in ``out_dir`` supplies filled in (only
    those the recipe leaves unset); ``spec`` itself without an ``adapt`` section."""
    if recipe.adapt is None:
        return spec
    from synthset.adapt.registry import build_adapter

    if recipe.adapt.checkpoint is not None:
        out_dir = kept_checkpoint(out_dir, recipe.adapt.checkpoint)
    inputs = build_adapter(recipe.adapt).generator_inputs(out_dir)
    unset = {k: v for k, v in inputs.items() if not getattr(spec, k)}
    return spec.model_copy(update=unset) if unset else spec


# ----------------------------------------------------------------------------- prompts, plan


def write_prompts(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any]:
    """Write ``prompts.jsonl`` (and ``prompts_report.json``): the prompts of every class."""
    from synthset.prompts.base import collect_prompts
    from synthset.prompts.diversity import diversity_report
    from synthset.prompts.registry import build_strategy

    classes = read_classes(run.classes)
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
    short = _short_classes(classes, records, spec.per_class)
    # said when the recipe asked for a number (the default 20 with one template is not a request)
    if short and ("per_class" in spec.model_fields_set or spec.shortfall == "error"):
        name, count = next(iter(short.items()))
        message = (
            f"prompts: only {count} distinct prompt{'' if count == 1 else 's'} for class {name!r} "
            f"(per_class "
            f"{spec.per_class}; {len(short)} of {len(classes)} classes short)"
        )
        if spec.shortfall == "error":
            raise SynthsetError(
                f"{message}; add templates, slots or a richer source, raise prompts.max_rounds, "
                "or set prompts.shortfall: warn"
            )
        log.warning("%s; the plan cycles through the prompts there are", message)
    save_prompts(run.prompts, records)
    report = {
        "strategy": spec.strategy,
        "per_class_target": spec.per_class,
        "label_check": spec.label_check,
        "short_of_per_class": short,
        "stats": {name: vars(st) for name, st in stats.items()},
        "diversity": diversity_report(records, spec.diversity_model),
    }
    if callable(getattr(strategy, "report", None)):  # e.g. the file import's skipped captions
        report["strategy_report"] = strategy.report()
    atomic_write_json(run.prompts_report, report)
    return {"prompts": len(records)}


def _short_classes(
    classes: list[ClassInfo], records: list[PromptRecord], per_class: int
) -> dict[str, int]:
    """Classes with fewer than ``per_class`` prompts, and how many they have."""
    counts = {c.id: 0 for c in classes}
    for rec in records:
        counts[rec.class_id] = counts.get(rec.class_id, 0) + 1
    return {c.name: counts[c.id] for c in classes if counts[c.id] < per_class}


def class_synonyms(recipe: Recipe) -> dict[str, list[str]]:
    """Synonyms per class name: shipped defaults for known lists, then the recipe's own."""
    from synthset.classes import default_synonyms

    merged = {k: list(v) for k, v in default_synonyms(recipe.classes).items()}
    for name, more in recipe.classes.synonyms.items():
        merged[name] = [*merged.get(name, []), *more]
    return merged


def prompts_by_class(records: list[PromptRecord]) -> dict[int, list[str]]:
    """Prompt texts per class id, in file order."""
    prompts: dict[int, list[str]] = {}
    for rec in records:
        prompts.setdefault(rec.class_id, []).append(rec.prompt)
    return prompts


def write_plan(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any]:
    """Write ``plan.jsonl``: every work item with its fixed seed."""
    assert recipe.generate is not None
    real = None
    if recipe.generate.members[0].uses_real_images and recipe.real is not None:
        real = real_train(run)
    prompts = prompts_by_class(load_prompts(run.prompts))
    inverted = None
    if recipe.generate.members[0].uses_inversion:
        from synthset.store.conditioning import read_inversion_index

        spec = adapted_spec(recipe.generate.members[0], recipe, run.adapt)
        inverted = read_inversion_index(spec.inversion_dir)
    items = build_plan(recipe, read_classes(run.classes), prompts, real, run.root, inverted)
    save_plan(run.plan, items)
    return {"items": len(items)}


# ----------------------------------------------------------------------------- generate


def generation_config(recipe: Recipe) -> str:
    """What an image depends on besides its item: a changed value regenerates the item."""
    g = recipe.generate
    if g is None:
        return "none"
    if g.generators is None:
        return _config_hash(recipe, g.generator.model_dump(mode="json"))
    return _config_hash(recipe, sorted(item_configs(recipe).items()))


def item_configs(recipe: Recipe) -> str | dict[str, str]:
    """The fingerprint recorded with each image: :func:`generation_config`, or for an ensemble
    one per member name (editing one member regenerates only that member's images)."""
    g = recipe.generate
    if g is None or g.generators is None:
        return generation_config(recipe)
    return {m.name: _config_hash(recipe, m.model_dump(mode="json")) for m in g.generators}


def _config_hash(recipe: Recipe, generator: Any) -> str:
    g = recipe.generate
    assert g is not None
    parts = {
        "generator": generator,
        "batch_size": g.batch_size,
        "format": [g.image_format, g.jpeg_quality],
        # an adapted artifact is an input of every image
        "adapt": recipe.fingerprint("classes", "real", "adapt") if recipe.adapt else None,
    }
    if recipe.adapt is not None and recipe.adapt.checkpoint is not None:
        parts["adapt_checkpoint"] = recipe.adapt.checkpoint  # only then: old runs keep their hash
    if g.members[0].uses_real_images:  # the real images are inputs of every item
        parts["real"] = recipe.fingerprint("classes", "real")
    recorded = recipe.labels.recorded() if recipe.labels is not None else None
    if recorded is not None:  # the side files labels need (only then: old runs keep their hash)
        parts["records"] = recorded
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def generation_status(recipe: Recipe, run: RunFolder) -> tuple[int, int]:
    """(finished, planned) items for the current plan and generation settings."""
    from synthset.executors.base import finished_ids

    if not run.plan.exists():
        return 0, 0
    plan = load_plan(run.plan)
    config = item_configs(recipe)
    return len(finished_ids(Manifest(run.manifest), plan, config)), len(plan)


def generate_images(
    recipe: Recipe, run: RunFolder, progress: bool = True, shard: tuple[int, int] = (0, 1)
) -> dict[str, Any]:
    """Generate this shard's unfinished items of ``plan.jsonl`` into the store with the recipe's
    executor; when the whole plan is finished, write ``images/metadata.jsonl`` and set aside any
    other file under ``images/`` (see :func:`generate_and_index`). ``complete`` in the result
    says whether it is."""
    spec = recipe.generate
    assert spec is not None
    plan = load_plan(run.plan)
    result, done = generate_and_index(
        recipe, plan, lambda: make_generator(recipe, run), run, shard, progress
    )
    return {
        "generated": result.generated,
        "skipped": result.skipped,
        "finished": len(done),
        "planned": len(plan),
        "complete": len(done) == len(plan),
        "generate_seconds": round(result.seconds, 2),
    }


def generate_and_index(
    recipe: Recipe,
    plan: list[WorkItem],
    make: Callable[[], Generator],
    run: RunFolder,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> tuple[GenerationResult, dict[str, dict]]:
    """Run ``plan`` (this shard of it) through the recipe's executor into ``run``; when every
    item is finished, write the index (``images/metadata.jsonl``). Returns what the executor
    did and the finished manifest entries by item id. With the index written, every other file
    under ``images/`` (an older format's, a smaller plan's) moves aside to ``stale/<time>/``
    once no writer runs (the last one to finish does it), so ``images/`` is exactly the set."""
    from synthset.executors.base import GenerationJob, finished_entries
    from synthset.executors.registry import build_executor
    from synthset.store.imagefolder import set_aside_unlisted
    from synthset.store.locks import no_writers

    spec = recipe.generate
    assert spec is not None
    config = item_configs(recipe)
    job = GenerationJob(plan, make, spec, run.images, run.manifest, config, shard)
    result = build_executor(spec).run(job, progress)
    done = finished_entries(Manifest(run.manifest), plan, config, run.images)
    if len(done) == len(plan):
        with no_writers(run.root) as alone:  # one index writer or sweep at a time
            write_metadata(run.images, [done[it.item_id] for it in plan])
            if alone:
                set_aside_unlisted(run.images, {e["file_name"] for e in done.values()}, run.stale)
    return result, done


def make_generator(recipe: Recipe, run: RunFolder) -> Generator:
    """The recipe's generator, or an ensemble that loads each member on first use; an adapted
    artifact (``adapt/``) fills the generator fields it supplies."""
    from synthset.generators.registry import LABEL_RECORDERS, build_generator

    spec: GenerateSpec | None = recipe.generate
    assert spec is not None

    def build(member: GeneratorSpec) -> Generator:
        generator = build_generator(adapted_spec(member, recipe, run.adapt), run.root)
        labels = recipe.labels
        if labels is None or labels.recorded() is None:
            return generator
        names = [c.name for c in read_classes(run.classes)]
        return LABEL_RECORDERS.load(labels.method)(generator, labels, names)

    if spec.generators is None:
        return build(spec.generator)
    from synthset.generators.ensemble import EnsembleGenerator

    return EnsembleGenerator({m.name: m for m in spec.generators}, build)


# ----------------------------------------------------------------------------- curate


def curate_synthetic(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any]:
    """Score the synthetic images and write the kept view (``curate/kept.jsonl``)."""
    from synthset.curate.run import curate_images

    return curate_images(recipe, run, progress)


def kept_rows(recipe: Recipe, run: RunFolder) -> list[dict[str, Any]]:
    """The rows of the synthetic index that the curated view keeps (all without curation)."""
    rows = read_rows(run.images)
    return rows if recipe.curate is None else kept_of(run.curate, rows)


def label_synthetic(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any]:
    """Turn what generation recorded into object labels (``labels/labels.jsonl``)."""
    from synthset.labels.run import label_all

    assert recipe.labels is not None
    names = [c.name for c in read_classes(run.classes)]
    return label_all(recipe.labels, kept_rows(recipe, run), names, run.root, run.labels, progress)


def export_synthetic(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any]:
    """Write the kept images in every format of ``export.formats``."""
    from synthset.export.run import export_all

    assert recipe.export is not None
    summary = export_all(
        recipe.export,
        kept_rows(recipe, run),
        read_classes(run.classes),
        run.images,
        run.export,
        recipe.seed,
        progress,
        labels_dir=run.labels if recipe.labels is not None else None,
    )
    return {"images": summary["images"], "formats": list(summary["formats"])}


# ----------------------------------------------------------------------------- evaluate


def synthetic_set(recipe: Recipe, run: RunFolder) -> Samples:
    """The one place that says which synthetic images evaluation reads: the ImageFolder
    ``evaluate.synthetic_dir`` when the recipe names one, else the run's own finished set."""
    from synthset.classes import ClassResolver
    from synthset.data.splits import scan_imagefolder

    spec = recipe.evaluate
    if spec is not None and spec.synthetic_dir is not None:
        lookup = ClassResolver(read_classes(run.classes))
        return scan_imagefolder(spec.synthetic_dir, lookup, "evaluate.synthetic_dir")
    if recipe.curate is not None:
        return [(r["path"], r["label"]) for r in kept_rows(recipe, run)]
    return read_samples(run.images)


def synthetic_index(recipe: Recipe, run: RunFolder) -> Path:
    """The file (or folder) whose content says which synthetic images :func:`synthetic_set`
    returns: a reader's fingerprint includes its digest."""
    spec = recipe.evaluate
    if spec is not None and spec.synthetic_dir is not None:
        return Path(spec.synthetic_dir)
    if recipe.curate is not None:
        return run.curate / KEPT_FILE
    return run.images / "metadata.jsonl"


def uses_retrieved(recipe: Recipe) -> bool:
    """Does CAS train on retrieved images?"""
    sets = recipe.evaluate.train_sets if recipe.evaluate is not None else []
    return any(s.startswith("retrieved") for s in sets)


def retrieve_pool(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any]:
    """Real images per class from the unlabeled pool (``retrieve/retrieved.jsonl``), as many
    per class as ``retrieve.per_class`` or, by default, as the synthetic set has."""
    import torch

    from synthset.curate.retrieval import retrieve
    from synthset.data.splits import load_splits
    from synthset.recipe import EvaluateSpec

    spec = recipe.retrieve
    assert spec is not None
    classes = read_classes(run.classes)
    if spec.per_class is not None:
        counts = {c.id: spec.per_class for c in classes}
    else:
        labels = torch.tensor([lbl for _, lbl in synthetic_set(recipe, run)], dtype=torch.int64)
        have = torch.bincount(labels, minlength=len(classes)).tolist()
        counts = {c.id: int(have[c.id]) for c in classes}
    summary = retrieve(
        spec,
        classes,
        load_splits(run.real / "splits.json"),
        counts,
        run.retrieve,
        run.cache / "retrieve",
        recipe.evaluate or EvaluateSpec(),
        class_synonyms(recipe),
        progress,
    )
    return {"retrieved": summary["retrieved"], "leaks_skipped": summary["leaks_skipped"]}


def uses_synthetic(recipe: Recipe) -> bool:
    """Does CAS train on synthetic images (and so need them)?"""
    sets = recipe.evaluate.train_sets if recipe.evaluate is not None else []
    return any("synthetic" in s or s == "uncurated" for s in sets)


def evaluate_cas(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any]:
    """CAS: train on real / synthetic / both, test on the held-out real test split."""
    from synthset.data.splits import load_splits
    from synthset.evaluate.cas import run_cas
    from synthset.evaluate.trackers import build_trackers, epoch_logger
    from synthset.executors.trainings import build_training_runner

    spec = recipe.evaluate
    assert spec is not None
    runner = build_training_runner(spec, recipe.slurm, run.root / "slurm" / "evaluate")
    classes = read_classes(run.classes)
    real = load_splits(run.real / "splits.json")
    synthetic = synthetic_set(recipe, run) if uses_synthetic(recipe) else []
    uncurated = read_samples(run.images) if "uncurated" in spec.train_sets else None
    retrieved = None
    if uses_retrieved(recipe):
        from synthset.store.retrieved import retrieved_samples

        retrieved = retrieved_samples(run.retrieve)
    names = [c.name for c in classes]
    (run.evaluate / "metrics.jsonl").unlink(missing_ok=True)  # a rerun logs afresh
    tracker = build_trackers(spec.trackers, run.root, recipe.model_dump(mode="json"))
    try:
        run_cas(
            spec,
            real,
            synthetic,
            names,
            run.evaluate,
            progress,
            epoch_logger(tracker),
            run.cache / "tensors",
            uncurated,
            runner,
            ood_samples(spec.ood_test, classes) if spec.ood_test is not None else None,
            retrieved,
        )
    finally:
        tracker.close()
    return {}


def ood_samples(folder: Path, classes: list[ClassInfo]) -> Samples:
    """The images of ``evaluate.ood_test`` (an ImageFolder whose folders are the run's classes)."""
    from synthset.classes import ClassResolver
    from synthset.data.splits import scan_imagefolder

    return scan_imagefolder(folder, ClassResolver(classes), "evaluate.ood_test")


def learn_continually(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any]:
    """Online continual learning on streams of the classes (``evaluate/continual.json``)."""
    from synthset.data.splits import load_splits
    from synthset.evaluate.continual import run_continual
    from synthset.evaluate.tensors import infer_format, load_tensors

    spec = recipe.evaluate
    assert spec is not None and spec.continual is not None
    cl = spec.continual
    classes = read_classes(run.classes)
    names = [c.name for c in classes]
    real = load_splits(run.real / "splits.json")
    size, channels = infer_format(real["train"], "real train")
    size, channels = spec.image_size or size, spec.channels or channels
    cache = run.cache / "tensors"

    def tensors(samples: Samples, what: str) -> TensorSet:
        if not samples:
            raise SynthsetError(f"evaluate.continual: the {what} set has no images")
        return load_tensors(samples, size, channels, what, cache)

    sources = {
        "real": lambda: real.get("train") or [],
        "synthetic": lambda: synthetic_set(recipe, run),
    }
    streams = {name: tensors(sources[name](), name) for name in cl.train_sets}
    ood = None
    if spec.ood_test is not None:
        ood = tensors(ood_samples(spec.ood_test, classes), "out-of-domain test")
    result = run_continual(
        cl, streams, tensors(real.get("test") or [], "real test"), names, ood, spec.device, progress
    )
    atomic_write_json(run.evaluate / "continual.json", result)
    return {}


def measure_fidelity(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any]:
    """FID, KID, precision/recall, density/coverage, diversity and CLIP score of the synthetic
    images against real ones (``evaluate/fidelity.json``)."""
    from synthset.data.splits import load_splits
    from synthset.evaluate.fidelity import run_fidelity
    from synthset.store.imagefolder import read_prompts

    spec = recipe.evaluate
    assert spec is not None
    names = [c.name for c in read_classes(run.classes)]
    synthetic = synthetic_set(recipe, run)
    prompts = read_prompts(Path(spec.synthetic_dir) if spec.synthetic_dir else run.images)
    real = load_splits(run.real / "splits.json")
    run_fidelity(spec, real, synthetic, prompts, names, run.evaluate, progress)
    return {}


# ----------------------------------------------------------------------------- report


def write_run_report(
    recipe: Recipe, run: RunFolder, stage_order: list[str] | None = None
) -> dict[str, Any]:
    """Write ``report.html`` from whatever the run folder holds."""
    from synthset.report.html import write_report

    write_report(run, recipe, read_classes(run.classes), stage_order)
    return {}
