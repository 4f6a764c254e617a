"""``synthset tune``: an Optuna search over generation knobs, scored on the real **val** split.

Each trial applies its values to the recipe (the ``--set`` machinery), generates a small
synthetic set into ``tune/trials/<number>/`` with the base run's adapted model and prompts, trains a
short proxy classifier on those synthetic images only, and returns its best accuracy on the real
validation split. The real test split is never read here: :func:`tune_splits` drops it before any
image path is built, so a tuned recipe cannot leak test information (unlike the reference code).

The study lives in ``tune/study.db`` (SQLite): a killed study resumes, a trial that was running
when the process died is retried with the same values, and finished trials are never redone.
With ``tune.stages`` the spaces are searched one after another, each fixing the best values found
before it (the two-stage search of Lomurno et al.).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from synthset.classes import ClassInfo
from synthset.data.splits import Samples, load_splits
from synthset.errors import SynthsetError
from synthset.evaluate.tensors import TensorSet
from synthset.evaluate.tune_space import (
    apply_params,
    check_space,
    recipe_values,
    study_key,
    suggest,
)
from synthset.recipe import EvaluateSpec, Recipe, TuneParam, TuneSpec, dump_recipe
from synthset.store.atomic import atomic_write_json, atomic_write_text
from synthset.store.run_folder import RunFolder

METRIC = "best real-val accuracy of a proxy classifier trained on the trial's synthetic images"


@dataclass
class TuneContext:
    """What every trial shares: the base run's classes, prompts, model and real val images."""

    recipe: Recipe
    run: RunFolder
    classes: list[ClassInfo]
    prompts: dict[int, list[str]]
    train: Samples
    val: TensorSet  # the real val split, decoded once
    size: int
    channels: int
    device: torch.device
    progress: bool


def tune_folder(run: RunFolder) -> Path:
    return run.root / "tune"


def tune_splits(run: RunFolder) -> dict[str, Samples]:
    """The real train and val splits. The test split is never loaded: tuning cannot see it."""
    return load_splits(run.real / "splits.json", names=("train", "val"))


# ----------------------------------------------------------------------------- one trial


def trial_model(ctx: TuneContext, recipe: Recipe) -> Path | None:
    """The tiny model a trial samples from: the base run's, or (for adapt knobs) one trained for
    these adapt settings in ``tune/adapt/<fingerprint>/`` and shared by trials that agree."""
    gen = recipe.generate
    assert gen is not None
    if gen.generator.kind != "tiny" or gen.generator.model is not None:
        return None
    if recipe.adapt == ctx.recipe.adapt:
        return ctx.run.adapt
    from synthset.adapt.tiny_diffusion import train_tiny_diffusion

    assert recipe.adapt is not None
    out = tune_folder(ctx.run) / "adapt" / recipe.fingerprint("classes", "real", "adapt")
    done = out / ".done"
    if not done.exists():
        train_tiny_diffusion(
            recipe.adapt, ctx.train, len(ctx.classes), out, recipe.seed, ctx.progress
        )
        atomic_write_text(done, "")
    return out


def trial_prompts(ctx: TuneContext, recipe: Recipe, trun: RunFolder) -> dict[int, list[str]]:
    """The base run's prompts, or new ones when the trial changes a prompts knob."""
    if recipe.prompts == ctx.recipe.prompts:
        return ctx.prompts
    from synthset.pipeline import stage_prompts

    return _by_class(stage_prompts(recipe, trun))


def _by_class(records: list[Any]) -> dict[int, list[str]]:
    prompts: dict[int, list[str]] = {}
    for rec in records:
        prompts.setdefault(rec.class_id, []).append(rec.prompt)
    return prompts


def generate_trial(ctx: TuneContext, recipe: Recipe, trun: RunFolder) -> Samples:
    """Generate (or finish generating) a trial's synthetic set; return its (path, label) list."""
    from synthset.executors.local import finished_entries, run_generation
    from synthset.generators.base import build_generator
    from synthset.pipeline import generation_config
    from synthset.plan import build_plan, save_plan
    from synthset.store.imagefolder import write_metadata
    from synthset.store.manifest import Manifest

    spec = recipe.generate
    assert spec is not None
    atomic_write_text(trun.recipe, dump_recipe(recipe))
    model = trial_model(ctx, recipe)
    items = build_plan(recipe, ctx.classes, trial_prompts(ctx, recipe, trun))
    save_plan(trun.plan, items)
    config = generation_config(recipe)
    manifest = Manifest(trun.manifest)
    run_generation(
        items,
        lambda: build_generator(spec.generator, model),
        spec,
        trun.images,
        manifest,
        config,
        progress=False,
    )
    done = finished_entries(manifest, items, config)
    entries = [done[it.item_id] for it in items]
    write_metadata(trun.images, entries)
    return [(trun.images / e["file_name"], int(e["class_id"])) for e in entries]


def proxy_train(
    ctx: TuneContext, samples: Samples, on_epoch: Callable[[int, float, float], None]
) -> float:
    """Train the proxy classifier on ``samples``; its best accuracy on the real val split."""
    from synthset.devices import cpu_threads
    from synthset.evaluate.classifiers import build_classifier
    from synthset.evaluate.tensors import check_labels, load_tensors
    from synthset.evaluate.train import train_classifier

    spec = ctx.recipe.tune
    assert spec is not None
    base = ctx.recipe.evaluate or EvaluateSpec()
    proxy = base.model_copy(update={"epochs": spec.proxy_epochs, "seeds": [ctx.recipe.seed]})
    train = load_tensors(samples, ctx.size, ctx.channels, "tune trial synthetic images")
    check_labels(train, len(ctx.classes), "tune trial synthetic images")
    torch.manual_seed(ctx.recipe.seed)
    model = build_classifier(proxy.classifier, len(ctx.classes), ctx.channels, ctx.size)
    with cpu_threads(ctx.device, ctx.size):
        best = train_classifier(
            model,
            train,
            ctx.val,
            spec=proxy,
            seed=ctx.recipe.seed,
            device=ctx.device,
            progress=False,
            desc="proxy",
            on_epoch=on_epoch,
        )
    return best.best_val_accuracy


# ----------------------------------------------------------------------------- the study


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise SynthsetError(
            "synthset tune needs optuna: pip install 'synthset[tune]' (or pip install optuna)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _sampler(optuna: Any, spec: TuneSpec, seed: int) -> Any:
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(optuna: Any, spec: TuneSpec) -> Any:
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec.pruner_startup_trials, n_warmup_steps=spec.pruner_warmup_epochs
        )
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.proxy_epochs)
    return optuna.pruners.NopPruner()


def _finished(optuna: Any, study: Any) -> list[Any]:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


def _retry_killed(optuna: Any, storage: Any, study: Any) -> None:
    """Trials left RUNNING by a killed process fail now and are queued again with their values
    (their generated images move to the retry's folder, so no image is made twice)."""
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study.study_name), t.number
        )
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)


def _trial_dir(root: Path, stage: int, n_stages: int, number: int) -> Path:
    name = str(number) if n_stages == 1 else f"s{stage}-{number}"
    return root / "trials" / name


def _trial_row(optuna: Any, t: Any, stage: int) -> dict[str, Any]:
    seconds = None
    if t.datetime_start is not None and t.datetime_complete is not None:
        seconds = round((t.datetime_complete - t.datetime_start).total_seconds(), 3)
    return {
        "number": t.number,
        "stage": stage,
        "state": t.state.name,
        "value": t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
        "params": dict(t.params),
        "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        "seconds": seconds,
    }


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """One ``synthset tune`` per run folder at a time (a second one would fail the first's
    running trials as stale)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    with open(folder / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SynthsetError(
                f"another 'synthset tune' is running on {folder}; wait for it or stop it"
            ) from None
        yield


def prepare_context(recipe: Recipe, progress: bool) -> TuneContext:
    """Run (or reuse) the base run's stages a trial needs: classes, real splits, model, prompts."""
    from synthset.devices import resolve_device
    from synthset.evaluate.tensors import check_labels, infer_format, load_tensors
    from synthset.pipeline import open_run, stage_adapt, stage_classes, stage_data, stage_prompts

    run = open_run(recipe)
    classes = stage_classes(recipe, run)
    stage_data(recipe, run)
    real = tune_splits(run)
    if not real.get("val"):
        raise SynthsetError("tune: the real val split is empty; set real.val_fraction > 0")
    gen = recipe.generate
    assert gen is not None
    if gen.generator.kind == "tiny" and gen.generator.model is None:
        stage_adapt(recipe, run, progress)
    prompts = _by_class(stage_prompts(recipe, run))
    ev = recipe.evaluate or EvaluateSpec()
    size, channels = infer_format(real.get("train") or real["val"], "real train")
    size, channels = ev.image_size or size, ev.channels or channels
    val = load_tensors(real["val"], size, channels, "real val")
    check_labels(val, len(classes), "real val")
    return TuneContext(
        recipe, run, classes, prompts, real["train"], val, size, channels,
        resolve_device(ev.device), progress,
    )  # fmt: skip


def run_tune(recipe: Recipe, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the study; write ``tune/trials.json``, ``best.json``, ``best_recipe.yaml``
    and return the best result."""
    spec = recipe.tune
    if spec is None:
        raise SynthsetError("tune: the recipe has no 'tune' section; add tune.space")
    optuna = _optuna()
    spaces = spec.spaces()
    fixed: dict[str, Any] = {}
    for space in spaces:
        check_space(recipe, space)
    ctx = prepare_context(recipe, progress)
    root = tune_folder(ctx.run)
    with _exclusive(root):
        storage = optuna.storages.RDBStorage(f"sqlite:///{(root / 'study.db').resolve()}")
        rows: list[dict[str, Any]] = []
        stage_results = []
        for index, space in enumerate(spaces, start=1):
            stage_recipe = apply_params(recipe, fixed) if fixed else recipe
            study = optuna.create_study(
                study_name=f"{recipe.name}-stage{index}-{study_key(stage_recipe, space)}",
                storage=storage,
                load_if_exists=True,
                direction="maximize",
                sampler=_sampler(optuna, spec, recipe.seed + index - 1),
                pruner=_pruner(optuna, spec),
            )
            if spec.start_from_recipe and not study.trials:
                study.enqueue_trial(recipe_values(stage_recipe, space))
            _retry_killed(optuna, storage, study)
            earlier = list(rows)

            def write(study: Any = study, stage: int = index, earlier: list = earlier) -> None:
                current = [_trial_row(optuna, t, stage) for t in study.get_trials(deepcopy=False)]
                atomic_write_json(root / "trials.json", earlier + current)

            objective = _objective(ctx, stage_recipe, space, root, index, len(spaces))
            _optimize(optuna, study, objective, spec, index, len(spaces), write, progress)
            write()
            rows = earlier + [_trial_row(optuna, t, index) for t in study.get_trials()]
            best = _best(optuna, study, index)
            fixed |= best.params
            stage_results.append(
                {"value": best.value, "params": best.params, "number": best.number}
            )
        result = {
            "value": stage_results[-1]["value"],
            "params": fixed,
            "metric": METRIC,
            "n_trials": sum(1 for r in rows if r["state"] in ("COMPLETE", "PRUNED")),
            "stages": stage_results,
        }
        atomic_write_json(root / "best.json", result)
        best_recipe = apply_params(recipe, fixed)
        header = (
            f"# synthset tune: the base recipe with the best values found "
            f"({METRIC}: {result['value']:.4f})\n"
            + "".join(f"#   {k}: {v!r}\n" for k, v in fixed.items())
        )
        atomic_write_text(root / "best_recipe.yaml", header + dump_recipe(best_recipe))
    return result


def _best(optuna: Any, study: Any, stage: int) -> Any:
    try:
        return study.best_trial
    except ValueError:
        raise SynthsetError(
            f"tune stage {stage}: no trial finished (all were pruned or failed); "
            "raise tune.n_trials or tune.pruner_startup_trials"
        ) from None


def _objective(
    ctx: TuneContext,
    base: Recipe,
    space: dict[str, TuneParam],
    root: Path,
    stage: int,
    n_stages: int,
) -> Callable[[Any], float]:
    import optuna

    spec = ctx.recipe.tune
    assert spec is not None

    def objective(trial: optuna.Trial) -> float:
        params = {path: suggest(trial, path, p) for path, p in space.items()}
        tdir = _trial_dir(root, stage, n_stages, trial.number)
        retry_of = trial.user_attrs.get("retry_of")
        old = None if retry_of is None else _trial_dir(root, stage, n_stages, retry_of)
        if old is not None and old.is_dir() and not tdir.exists():
            old.rename(tdir)  # the killed attempt's images count
        elif tdir.exists() and retry_of is None:
            shutil.rmtree(tdir)  # left by an older study with other settings
        overrides = {"generate.images_per_class": spec.images_per_class, "output_dir": str(tdir)}
        recipe = apply_params(base, overrides | params)
        samples = generate_trial(ctx, recipe, RunFolder(tdir))

        def on_epoch(epoch: int, val_acc: float, val_loss: float) -> None:
            trial.report(val_acc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: val accuracy {val_acc:.4f}")

        return proxy_train(ctx, samples, on_epoch)

    return objective


def _optimize(
    optuna: Any,
    study: Any,
    objective: Callable[[Any], float],
    spec: TuneSpec,
    stage: int,
    n_stages: int,
    write: Callable[[], None],
    progress: bool,
) -> None:
    """Top the stage up to ``spec.n_trials`` finished trials (a rerun never redoes one)."""
    done = len(_finished(optuna, study))
    remaining = spec.n_trials - done
    write()
    if remaining <= 0:
        return
    desc = "tune" if n_stages == 1 else f"tune stage {stage}/{n_stages}"
    bar = tqdm(total=spec.n_trials, initial=done, desc=desc, unit="trial", disable=not progress)

    def after(study: Any, trial: Any) -> None:
        write()
        if trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            bar.update(1)
        with contextlib.suppress(ValueError):
            bar.set_postfix(best=f"{study.best_value:.4f}")

    try:
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=spec.timeout,
            callbacks=[after],
            gc_after_trial=False,
        )
    finally:
        bar.close()
