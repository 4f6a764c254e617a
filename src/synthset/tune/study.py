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
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from synthset.classes import ClassInfo, read_classes, write_classes
from synthset.data.splits import Samples, load_splits
from synthset.errors import SynthsetError
from synthset.evaluate.tensors import TensorSet
from synthset.prompts.base import load_prompts
from synthset.recipe import EvaluateSpec, Recipe, TuneParam, TuneSpec, dump_recipe
from synthset.stages import adapted_spec, generate_and_index, prompts_by_class, write_prompts
from synthset.store.atomic import atomic_write_json, atomic_write_text
from synthset.store.imagefolder import read_rows, read_samples
from synthset.store.run_folder import RunFolder
from synthset.tune.space import apply_params, check_space, recipe_values, study_key, suggest

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


def tune_splits(run: RunFolder) -> dict[str, Samples]:
    """The real train and val splits. The test split is never loaded: tuning cannot see it."""
    return load_splits(run.real / "splits.json", names=("train", "val"))


# ----------------------------------------------------------------------------- one trial


def trial_model(ctx: TuneContext, recipe: Recipe) -> Path | None:
    """The adapted artifact a trial generates with: the base run's, or (for adapt knobs) one
    fitted for these adapt settings in ``tune/adapt/<fingerprint>/`` and shared by trials that
    agree. None without an ``adapt`` section."""
    if recipe.adapt is None:
        return None
    if _trained(recipe.adapt) == _trained(ctx.recipe.adapt):  # same training, maybe a kept step
        return ctx.run.adapt
    from synthset.adapt.base import AdaptData
    from synthset.adapt.registry import build_adapter

    out = ctx.run.tune / "adapt" / recipe.fingerprint("classes", "real", "adapt")
    done = out / ".done"
    if not done.exists():
        data = AdaptData.for_spec(recipe.adapt, ctx.train, ctx.classes, prompts=ctx.prompts)
        build_adapter(recipe.adapt).fit(data, out, recipe.seed, ctx.progress)
        atomic_write_text(done, "")
    return out


def _trained(spec: Any) -> Any:
    """An adapt spec without ``checkpoint``: what is trained, not which kept step is used."""
    return spec.model_copy(update={"checkpoint": None}) if spec is not None else None


def trial_prompts(ctx: TuneContext, recipe: Recipe, trun: RunFolder) -> dict[int, list[str]]:
    """The base run's prompts, or new ones (in the trial's folder) when the trial changes a
    prompts knob."""
    if recipe.prompts == ctx.recipe.prompts:
        return ctx.prompts
    if not trun.prompts.exists():
        write_classes(trun.classes, ctx.classes)
        write_prompts(recipe, trun, ctx.progress)
    return prompts_by_class(load_prompts(trun.prompts))


def generate_trial(ctx: TuneContext, recipe: Recipe, trun: RunFolder) -> Samples:
    """Generate (or finish generating) a trial's synthetic set; return its (path, label) list
    (the images the recipe's curation keeps, when it curates)."""
    from synthset.generators.registry import build_generator
    from synthset.plan import build_plan, save_plan

    spec = recipe.generate
    assert spec is not None
    atomic_write_text(trun.recipe, dump_recipe(recipe))
    model = trial_model(ctx, recipe)
    generator = spec.generator if model is None else adapted_spec(spec.generator, recipe, model)
    inverted = None
    if generator.uses_inversion:  # the trial samples the images its artifact inverted
        from synthset.store.conditioning import read_inversion_index

        inverted = read_inversion_index(generator.inversion_dir)
    items = build_plan(recipe, ctx.classes, trial_prompts(ctx, recipe, trun), inverted=inverted)
    save_plan(trun.plan, items)
    generate_and_index(recipe, items, lambda: build_generator(generator), trun, progress=False)
    if recipe.curate is None:
        return read_samples(trun.images)
    from synthset.curate.run import curate_trial  # the proxy trains on what curation keeps

    kept = curate_trial(recipe, ctx.run, trun.root, read_rows(trun.images))
    return [(r["path"], r["label"]) for r in kept]


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
    running trials as stale): an OS file lock the kernel drops when its process dies."""
    from filelock import FileLock, Timeout

    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SynthsetError(
            f"another 'synthset tune' is running on {folder}; wait for it or stop it"
        ) from None
    try:
        yield
    finally:
        lock.release()


def finished_trials(trials_json: Path) -> int:
    """How many trials ``trials.json`` records as finished (complete or pruned)."""
    if not trials_json.exists():
        return 0
    rows = json.loads(trials_json.read_text())
    return sum(1 for r in rows if r.get("state") in FINISHED)


FINISHED = ("COMPLETE", "PRUNED")


def check_spaces(recipe: Recipe) -> None:
    """Every value of every search space gives a valid recipe (a one-line error before any work)."""
    if recipe.tune is None:
        raise SynthsetError("tune: the recipe has no 'tune' section; add tune.space")
    for space in recipe.tune.spaces():
        check_space(recipe, space)


def prepare_context(recipe: Recipe, run: RunFolder, progress: bool) -> TuneContext:
    """What every trial shares, read from the base run's files (the pipeline has brought its
    classes, real splits, adapted artifact and prompts up to date)."""
    from synthset.devices import resolve_device
    from synthset.evaluate.tensors import check_labels, infer_format, load_tensors

    classes = read_classes(run.classes)
    real = tune_splits(run)
    if not real.get("val"):
        raise SynthsetError("tune: the real val split is empty; set real.val_fraction > 0")
    prompts = prompts_by_class(load_prompts(run.prompts))
    ev = recipe.evaluate or EvaluateSpec()
    size, channels = infer_format(real.get("train") or real["val"], "real train")
    size, channels = ev.image_size or size, ev.channels or channels
    val = load_tensors(real["val"], size, channels, "real val")
    check_labels(val, len(classes), "real val")
    return TuneContext(
        recipe=recipe,
        run=run,
        classes=classes,
        prompts=prompts,
        train=real["train"],
        val=val,
        size=size,
        channels=channels,
        device=resolve_device(ev.device),
        progress=progress,
    )


def run_tune(recipe: Recipe, run: RunFolder, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the study on the base run ``run``; write ``tune/trials.json``,
    ``best.json``, ``best_recipe.yaml`` and return the best result."""
    check_spaces(recipe)
    spec = recipe.tune
    assert spec is not None
    optuna = _optuna()
    spaces = spec.spaces()
    fixed: dict[str, Any] = {}
    ctx = prepare_context(recipe, run, progress)
    root = run.tune
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
            "n_trials": sum(1 for r in rows if r["state"] in FINISHED),
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
