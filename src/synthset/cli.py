"""The command line: one verb per stage, plus ``run`` (all stages) and ``demo`` (the digits run).

Bad input prints one line (``error: …``) and exits with status 2, never a traceback.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from synthset.errors import SynthsetError, storage_error
from synthset.recipe import GenerateSpec, Recipe, load_recipe
from synthset.redaction import redact
from synthset.store.run_folder import RunFolder

app = typer.Typer(
    help="Synthetic labeled image datasets from diffusion models, scored by CAS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# markup off: class names, prompts, paths and server answers are printed as they are (a caption
# "a [/b] dog" is text, not a rich tag); styles are given explicitly
console = Console(stderr=True, markup=False)
out = Console(markup=False)

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a recipe value: key.path=value (repeatable)."),
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="Run folder (overrides output_dir).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Turn SynthsetError into a one-line message and Ctrl-C into a resume hint."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SynthsetError as exc:
            _print_error(exc)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("interrupted: finished work is saved; run the same command to resume")
            raise typer.Exit(130) from None
        except OSError as exc:
            if (error := storage_error(exc)) is None:
                raise
            _print_error(error)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _print_error(exc: SynthsetError) -> None:
    """The one line a user sees (secrets redacted, never wrapped)."""
    message = Text.assemble(("error:", "bold red"), " ", redact(str(exc)))
    console.print(message, highlight=False, soft_wrap=True)


def _load(recipe: Path, overrides: list[str] | None, out_dir: Path | None) -> Recipe:
    return load_recipe(recipe, list(overrides or []), output_dir=out_dir)


def _open(recipe: Recipe) -> RunFolder:
    from synthset.pipeline import open_run

    return open_run(recipe)


def bundled_recipe(name: str) -> Path:
    """Path of a recipe shipped inside the package (``recipes/<name>.yaml``)."""
    return Path(str(resources.files("synthset") / "recipes" / f"{name}.yaml"))


# ----------------------------------------------------------------------------- verbs


@app.command()
@friendly_errors
def validate(recipe: RecipeArg, set_: SetOpt = None) -> None:
    """Check a recipe and print it with every default filled in."""
    from synthset.recipe import dump_recipe

    out.print(dump_recipe(_load(recipe, set_, None)), highlight=False)
    console.print("recipe is valid", style="green")


@app.command()
@friendly_errors
def data(recipe: RecipeArg, set_: SetOpt = None, out_dir: OutOpt = None) -> None:
    """Split the real images into train / val / test."""
    from synthset.pipeline import stage_data

    r = _load(recipe, set_, out_dir)
    ran = stage_data(r, _open(r))
    console.print("real data split written" if ran else "real data: nothing to do")


@app.command()
@friendly_errors
def adapt(
    recipe: RecipeArg,
    set_: SetOpt = None,
    out_dir: OutOpt = None,
    shard: Annotated[
        str | None,
        typer.Option(
            help="diffusion_inversion: invert only groups i, i+n, ... (i/n, or 'slurm'); the "
            "shard that finds every group done assembles the result."
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Adapt a model to the real train split (adapt.method; resumes after a crash or kill)."""
    from synthset.pipeline import stage_adapt
    from synthset.plan import parse_shard

    r = _load(recipe, set_, out_dir)
    shard_ix = parse_shard(shard)
    ran = stage_adapt(r, _open(r), progress=not quiet, shard=shard_ix)
    if shard_ix != (0, 1):
        state = "complete" if ran else "incomplete (other shards or a rerun will finish it)"
        console.print(f"adapt shard {shard_ix[0]}/{shard_ix[1]} done; the artifact is {state}")
    else:
        console.print("model adapted" if ran else "adapt: nothing to do (already adapted)")


def _class_ids(text: str | None, names: list[str]) -> tuple[int, ...] | None:
    """``0-4`` or ``0,2,5`` (class ids) or class names → sorted ids; None for every class."""
    if not text:
        return None
    ids: set[int] = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        lo, dash, hi = part.partition("-")
        try:
            ids.update(range(int(lo), int(hi) + 1) if dash else [int(part)])
        except ValueError:
            if part not in names:
                raise SynthsetError(
                    f"--classes: {part!r} is neither a class id, a range like 0-4, nor a class "
                    "name of this recipe"
                ) from None
            ids.add(names.index(part))
    bad = sorted(i for i in ids if not 0 <= i < len(names))
    if bad:
        raise SynthsetError(f"--classes: class id {bad[0]} is out of range 0..{len(names) - 1}")
    return tuple(sorted(ids))


@app.command("pretrain-tiny")
@friendly_errors
def pretrain_tiny(
    recipe: RecipeArg,
    captions: Annotated[
        str, typer.Option(help="generic (no class words) or class (class-name captions).")
    ] = "generic",
    classes: Annotated[
        str | None,
        typer.Option(help="Pretrain on these classes only: ids (0-4, 0,2,5) or names."),
    ] = None,
    base_out: Annotated[
        Path | None,
        typer.Option("--base-out", help="Pipeline folder (default: <run>/base-<captions>)."),
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="UNet + text encoder steps.")] = 3000,
    vae_steps: Annotated[int, typer.Option(min=1, help="Autoencoder steps.")] = 600,
    set_: SetOpt = None,
    out_dir: OutOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Pretrain a tiny text-conditional Stable Diffusion pipeline on the recipe's real train
    split (CPU minutes): the stand-in for a downloaded base model that adapt methods adapt."""
    from synthset.adapt.tiny_base import BaseSettings, pretrain_tiny_base
    from synthset.classes import read_classes
    from synthset.data.splits import load_splits
    from synthset.pipeline import stage_data

    if captions not in ("generic", "class"):
        raise SynthsetError(f"--captions: {captions!r}; choose generic or class")
    r = _load(recipe, set_, out_dir)
    if r.real is None:
        raise SynthsetError("pretrain-tiny trains on real images: add a 'real' section")
    run = _open(r)
    stage_data(r, run)
    names = [c.name for c in read_classes(run.classes)]
    ids = _class_ids(classes, names)
    settings = BaseSettings(
        captions=captions,  # type: ignore[arg-type]
        class_ids=ids,
        steps=steps,
        vae_steps=vae_steps,
        seed=r.seed,
    )
    suffix = "" if ids is None else "-" + "_".join(str(i) for i in ids)
    target = base_out or run.root / f"base-{captions}{suffix}"
    train = load_splits(run.real / "splits.json", names=("train",))["train"]
    done = pretrain_tiny_base(train, names, settings, target, progress=not quiet)
    out.print(str(done), highlight=False, soft_wrap=True)


@app.command()
@friendly_errors
def prompts(
    recipe: RecipeArg,
    set_: SetOpt = None,
    out_dir: OutOpt = None,
    preview: Annotated[int, typer.Option(help="Print this many prompts per class.")] = 0,
    export: Annotated[
        Path | None,
        typer.Option(help="Also write the prompts as .json (captions_single_labeled) or .txt."),
    ] = None,
) -> None:
    """Write prompts.jsonl: the text prompts of every class (template, fakeit, LLM, file)."""
    from synthset.pipeline import stage_prompts

    r = _load(recipe, set_, out_dir)
    run = _open(r)
    records = stage_prompts(r, run)
    if preview:
        table = Table(title=f"prompts ({r.prompts.strategy})")
        table.add_column("class")
        table.add_column("prompt")
        shown: dict[int, int] = {}
        for rec in records:
            if shown.get(rec.class_id, 0) < preview:
                shown[rec.class_id] = shown.get(rec.class_id, 0) + 1
                table.add_row(rec.class_name, rec.prompt)
        out.print(table)
    if export is not None:
        from synthset.prompts.formats import export_prompts

        export_prompts(records, export)
        console.print(f"exported: {export}")
    n_classes = len({rec.class_id for rec in records})
    console.print(f"prompts: {len(records)} for {n_classes} classes in {run.prompts}")
    if run.prompts_report.exists():
        stats = json.loads(run.prompts_report.read_text())["stats"].values()
        proposed = sum(st["proposed"] for st in stats) or 1
        repaired = sum(st["repaired"] for st in stats)
        dropped = sum(st["dropped_unlabeled"] for st in stats)
        other = sum(st.get("dropped_other_class", 0) for st in stats)
        malformed = sum(st.get("malformed_answers", 0) for st in stats)
        dups = sum(st["duplicates"] for st in stats)
        unread = f"; {malformed} malformed LLM answers ignored" if malformed else ""
        console.print(
            f"label check: {repaired / proposed:.1%} repaired, {dropped / proposed:.1%} dropped, "
            f"{other / proposed:.1%} named another class{unread}; "
            f"{dups} near-duplicates removed (details: {run.prompts_report})"
        )


@app.command()
@friendly_errors
def plan(recipe: RecipeArg, set_: SetOpt = None, out_dir: OutOpt = None) -> None:
    """Write the plan: one work item per image, each with its own seed."""
    from synthset.pipeline import stage_plan

    r = _load(recipe, set_, out_dir)
    run = _open(r)
    items = stage_plan(r, run)
    console.print(f"plan: {len(items)} items in {run.plan}")


@app.command()
@friendly_errors
def generate(
    recipe: RecipeArg,
    set_: SetOpt = None,
    out_dir: OutOpt = None,
    shard: Annotated[
        str | None,
        typer.Option(
            help="Run only shard i of n (i/n, or 'slurm': this task of a SLURM job array); "
            "images do not change."
        ),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(help="local, queue or ray (default: the recipe's generate.executor)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Processes to run, one GPU each (more than one: the queue executor)."),
    ] = None,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="queue: try the batches set aside as failed again."),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate the plan's unfinished images (resumes after a crash or kill)."""
    from synthset.executors.queue import retry_failed as requeue_failed
    from synthset.pipeline import stage_generate
    from synthset.plan import parse_shard

    more = [f"generate.executor={executor}"] if executor else []
    more += [f"generate.workers={workers}"] if workers is not None else []
    r = _load(recipe, [*(set_ or []), *more], out_dir)
    shard_ix = parse_shard(shard)
    run = _open(r)
    if retry_failed:
        again = requeue_failed(run.root, shard_ix, r.generate) if r.generate else 0
        console.print(f"generate: {again} failed batches back in line")
    res = stage_generate(r, run, shard=shard_ix, progress=not quiet)
    state = "complete" if res["complete"] else "incomplete (other shards or a rerun will finish it)"
    console.print(
        f"generate: {res['generated']} new, {res['skipped']} already done; "
        f"{res['finished']}/{res['planned']} finished, dataset {state}"
    )


launch_app = typer.Typer(help="Run the plan on a cluster.", no_args_is_help=True)
app.add_typer(launch_app, name="launch")


@launch_app.command("slurm")
@friendly_errors
def launch_slurm_cmd(
    recipe: RecipeArg,
    set_: SetOpt = None,
    out_dir: OutOpt = None,
    tasks: Annotated[
        int | None, typer.Option(help="Array tasks (default: the recipe's slurm.tasks).")
    ] = None,
    local: Annotated[
        bool,
        typer.Option("--local", help="Run the same jobs as processes on this machine (no SLURM)."),
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Block until the last job ends.")] = False,
) -> None:
    """Submit the plan as a SLURM job array (submitit): prepare, one static shard per task
    (preempted tasks requeue and resume), then a sweep that finishes and runs every stage."""
    from synthset.launch import launch_slurm

    more = [f"slurm.tasks={tasks}"] if tasks is not None else []
    r = _load(recipe, [*(set_ or []), *more], out_dir)
    if r.slurm is None and not more:
        console.print("launch slurm: the recipe has no 'slurm' section; using its defaults")
    launched = launch_slurm(r, local=local, wait=wait)
    ids = launched.job_ids()
    shards = ids["shards"]
    console.print(
        f"launch slurm: prepare {ids['prepare'] or '(current, not needed)'}; "
        f"{len(shards)} shard tasks {shards[0]}..{shards[-1]}; sweep {ids['sweep'] or '(off)'}"
        f"; logs in {launched.folder}"
    )
    for problem in launched.problems:
        console.print(f"launch slurm: {problem} (the sweep finished its items)")
    if local or wait:
        console.print(f"launch slurm: done; see 'synthset status {recipe}'")


@app.command()
@friendly_errors
def curate(
    recipe: RecipeArg, set_: SetOpt = None, out_dir: OutOpt = None, quiet: QuietOpt = False
) -> None:
    """Score the synthetic images (label agreement, typicality, CLIP), drop leaks of the real
    val/test images and what the rules drop; writes the kept view curate/kept.jsonl."""
    from synthset.pipeline import stage_curate

    r = _load(recipe, set_, out_dir)
    result = stage_curate(r, _open(r), progress=not quiet)
    if result is None:
        raise SynthsetError("curate: the recipe has no 'curate' section; add one (curate: {})")
    out.print(curate_table(result))


@app.command()
@friendly_errors
def retrieve(
    recipe: RecipeArg, set_: SetOpt = None, out_dir: OutOpt = None, quiet: QuietOpt = False
) -> None:
    """Retrieve real images per class from an unlabeled pool (CLIP, prototypes or captions),
    skipping copies of the real val/test images: the baseline synthetic data must beat;
    writes retrieve/retrieved.jsonl (train on it with evaluate.train_sets: [retrieved])."""
    from synthset.pipeline import stage_retrieve

    r = _load(recipe, set_, out_dir)
    result = stage_retrieve(r, _open(r), progress=not quiet)
    if result is None:
        raise SynthsetError(
            "retrieve: the recipe has no 'retrieve' section; add one, e.g. "
            "retrieve: {pool: data/pool, by: clip, clip_model: /models/clip}"
        )
    out.print(retrieve_table(result))


@app.command()
@friendly_errors
def label(
    recipe: RecipeArg, set_: SetOpt = None, out_dir: OutOpt = None, quiet: QuietOpt = False
) -> None:
    """Masks, boxes and polygons of the objects in every synthetic image, from what generation
    recorded (cross-attention heat maps, inpainting masks); writes labels/labels.jsonl."""
    from synthset.pipeline import stage_label

    r = _load(recipe, set_, out_dir)
    result = stage_label(r, _open(r), progress=not quiet)
    if result is None:
        raise SynthsetError(
            "label: the recipe has no 'labels' section; add one (labels: {method: cross_attention})"
        )
    out.print(labels_table(result))


@app.command()
@friendly_errors
def export(
    recipe: RecipeArg,
    format_: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            "-f",
            help="imagefolder, webdataset, hf, parquet or stream (repeatable); default: the "
            "recipe's export.formats.",
        ),
    ] = None,
    to: Annotated[
        Path | None, typer.Option("--to", help="Folder for the formats (default: <run>/export).")
    ] = None,
    set_: SetOpt = None,
    out_dir: OutOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write the synthetic set (its curated view, if any) in other tools' formats; a killed
    export resumes."""
    from synthset.pipeline import stage_export

    more = [f"export.formats={json.dumps(format_)}"] if format_ else []
    more += [f"export.out_dir={json.dumps(str(to))}"] if to is not None else []
    r = _load(recipe, [*(set_ or []), *more], out_dir)
    if r.export is None or not r.export.formats:
        raise SynthsetError(
            "export: no formats; give --format F or an export section (export: {formats: [...]})"
        )
    result = stage_export(r, _open(r), progress=not quiet)
    assert result is not None
    for fmt, info in result["formats"].items():
        out.print(f"{fmt}: {info['dir']} ({info['seconds']} s)")


@app.command()
@friendly_errors
def evaluate(
    recipe: RecipeArg, set_: SetOpt = None, out_dir: OutOpt = None, quiet: QuietOpt = False
) -> None:
    """Classification Accuracy Score: train on real / synthetic / both, test on real."""
    from synthset.pipeline import stage_evaluate

    r = _load(recipe, set_, out_dir)
    result = stage_evaluate(r, _open(r), progress=not quiet)
    if result is None:
        raise SynthsetError("evaluate: the recipe has no 'evaluate' section; add one to run CAS")
    out.print(cas_table(result))


@app.command()
@friendly_errors
def fidelity(
    recipe: RecipeArg, set_: SetOpt = None, out_dir: OutOpt = None, quiet: QuietOpt = False
) -> None:
    """FID, KID, precision/recall, density/coverage, diversity and CLIP score of the synthetic
    images against real ones, overall and per class (evaluate/fidelity.json)."""
    from synthset.pipeline import stage_fidelity

    r = _load(recipe, set_, out_dir)
    if r.evaluate is None:
        raise SynthsetError("fidelity: the recipe has no 'evaluate' section; add one")
    if not r.evaluate.fidelity.enabled:
        r.evaluate.fidelity.enabled = True  # asking for the verb is asking for the metrics
    result = stage_fidelity(r, _open(r), progress=not quiet)
    if result is None:
        raise SynthsetError(
            "fidelity: no synthetic images; add a 'generate' section or set evaluate.synthetic_dir"
        )
    out.print(fidelity_table(result))


@app.command()
@friendly_errors
def continual(
    recipe: RecipeArg, set_: SetOpt = None, out_dir: OutOpt = None, quiet: QuietOpt = False
) -> None:
    """Online class-incremental learning on streams of the classes (real / synthetic), with
    experience replay: A_auc and A_last on real test (evaluate/continual.json)."""
    from synthset.pipeline import stage_continual

    r = _load(recipe, set_, out_dir)
    if r.evaluate is None or r.evaluate.continual is None:
        raise SynthsetError(
            "continual: the recipe has no 'evaluate.continual' section; add one, e.g. "
            "evaluate: {continual: {classes_per_task: 2, buffer_size: 100}}"
        )
    result = stage_continual(r, _open(r), progress=not quiet)
    assert result is not None
    out.print(continual_table(result))


@app.command()
@friendly_errors
def tune(
    recipe: RecipeArg, set_: SetOpt = None, out_dir: OutOpt = None, quiet: QuietOpt = False
) -> None:
    """Optuna search over generation knobs (tune.space), scored on the real val split; writes
    tune/best_recipe.yaml. A killed study resumes."""
    from synthset.pipeline import stage_tune

    r = _load(recipe, set_, out_dir)
    if r.tune is None:
        raise SynthsetError("tune: the recipe has no 'tune' section; add tune.space")
    run = _open(r)
    result = stage_tune(r, run, progress=not quiet)
    assert result is not None
    out.print(tune_table(json.loads((run.tune / "trials.json").read_text()), result))
    out.print(f"best: {result['value']:.4f} ({result['metric']})", highlight=False)
    for path, value in result["params"].items():
        out.print(f"  {path} = {value!r}", highlight=False)
    out.print(f"best recipe: {run.tune / 'best_recipe.yaml'}", highlight=False)


def tune_table(trials: list[dict[str, Any]], best: dict[str, Any]) -> Table:
    """A rich table of the study's trials; the best of each stage is marked."""
    table = Table(title="tune trials (proxy val accuracy)")
    names = list(dict.fromkeys(k for t in trials for k in t["params"]))
    multi = len({t["stage"] for t in trials}) > 1
    for col in (["stage"] if multi else []) + ["trial", "state", "value", "seconds"]:
        table.add_column(col, justify="right")
    for name in names:
        table.add_column(name.rsplit(".", 1)[-1], justify="right")
    winners = {(i + 1, s["number"]) for i, s in enumerate(best.get("stages", []))}
    for t in trials:
        value = "-" if t["value"] is None else f"{t['value']:.4f}"
        if (t["stage"], t["number"]) in winners:
            value = Text(f"{value} *", style="bold green")
        cells = [str(t["number"]), t["state"].lower(), value, f"{t['seconds'] or 0:.1f}"]
        params = [_fmt(t["params"].get(n)) for n in names]
        table.add_row(*([str(t["stage"])] if multi else []), *cells, *params)
    return table


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command()
@friendly_errors
def report(recipe: RecipeArg, set_: SetOpt = None, out_dir: OutOpt = None) -> None:
    """Write report.html from whatever the run folder holds."""
    from synthset.pipeline import stage_report

    r = _load(recipe, set_, out_dir)
    path = stage_report(r, _open(r))
    console.print(f"report: {path}" if path else "report disabled in the recipe")


@app.command()
@friendly_errors
def status(recipe: RecipeArg, set_: SetOpt = None, out_dir: OutOpt = None) -> None:
    """Show which stages are current, stale (an input changed) or not run, and how many
    images and trials are done."""
    from synthset.pipeline import STAGES, generation_status, is_current
    from synthset.tune.study import finished_trials

    r = _load(recipe, set_, out_dir)
    run = RunFolder(r.output_dir)
    table = Table(title=f"run folder {run.root}")
    table.add_column("stage")
    table.add_column("state")
    current: dict[str, bool] = {}  # a stage is current when its inputs and its needs are
    workers: Table | None = None
    for row in STAGES:
        if not row.applies(r):
            table.add_row(row.name, "not in recipe")
            continue
        needs_current = all(current.get(n, True) for n in row.needs(r))
        current[row.name] = needs_current and is_current(row, r, run)
        if current[row.name]:
            state = "done"
        elif run.stage_marker(row.name).exists():
            state = "stale: an input changed"
        else:
            state = "-"
        if row.name == "generate":
            finished, planned = generation_status(r, run)
            queue_text, workers = queue_state(run.root, r.generate) if r.generate else ("", None)
            state += f" ({finished}/{planned} images{queue_text})"
        if row.name == "tune" and r.tune is not None:
            state += f" ({finished_trials(run.tune / 'trials.json')}/{r.tune.n_trials} trials)"
        table.add_row(row.name, state)
    out.print(table)
    if workers is not None:
        out.print(workers)


def queue_state(root: Path, spec: GenerateSpec) -> tuple[str, Table | None]:
    """The queue executor's batches by state over its shards, images/s over the last five
    minutes and the time left at that pace ('' without a queue), and a table of its workers."""
    from synthset.executors.queue import queue_folder
    from synthset.store.queue import LeaseQueue

    totals = [0, 0, 0, 0]
    per_second = 0.0
    workers = Table(title="queue workers")
    for column in ("worker", "leased", "batches done", "last done"):
        workers.add_column(column)
    now = time.time()
    for path in sorted(queue_folder(root, spec).glob("shard*of*.sqlite")):
        queue = LeaseQueue(path)
        try:
            c = queue.counts()
            per_second += queue.done_per_second()
            for w in queue.workers():
                ago = f"{now - w.last_done:.0f} s ago" if w.last_done else "-"
                workers.add_row(w.worker, str(w.leased), str(w.done), ago)
        finally:
            queue.close()
        totals = [a + b for a, b in zip(totals, (c.done, c.leased, c.failed, c.todo), strict=True)]
    if not any(totals):
        return "", None
    done, leased, failed, left = totals
    text = f"; batches: {done} done, {leased} leased, {failed} failed, {left} left"
    if per_second > 0:
        eta = (left + leased) / per_second
        text += f"; {per_second * spec.batch_size:.1f} img/s, ETA {_duration(eta)}"
    return text, workers if workers.row_count else None


def _duration(seconds: float) -> str:
    """``3h05m``, ``4m10s`` or ``12s``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@app.command("run")
@friendly_errors
def run_cmd(
    recipe: RecipeArg, set_: SetOpt = None, out_dir: OutOpt = None, quiet: QuietOpt = False
) -> None:
    """Run every stage, skipping the finished ones."""
    _run_and_summarize(_load(recipe, set_, out_dir), quiet)


@app.command()
@friendly_errors
def demo(out_dir: OutOpt = None, set_: SetOpt = None, quiet: QuietOpt = False) -> None:
    """The embedded default: train a tiny diffusion model on scikit-learn's digits, generate a
    synthetic dataset, score it with CAS on held-out real digits, write report.html."""
    _run_and_summarize(_load(bundled_recipe("digits"), set_, out_dir), quiet)


def _run_and_summarize(recipe: Recipe, quiet: bool) -> None:
    from synthset.pipeline import StageLog, run_all

    log = StageLog()
    start = time.perf_counter()
    run = run_all(recipe, progress=not quiet, log=log)
    total = time.perf_counter() - start
    stages = Table(title="stages")
    stages.add_column("stage")
    stages.add_column("status")
    stages.add_column("seconds", justify="right")
    for name, state, seconds in log.entries:
        stages.add_row(name, state, f"{seconds:.1f}")
    out.print(stages)
    cas_path = run.evaluate / "cas.json"
    if recipe.evaluate is not None and cas_path.exists():
        out.print(cas_table(json.loads(cas_path.read_text())))
    fidelity_path = run.evaluate / "fidelity.json"
    if recipe.evaluate is not None and recipe.evaluate.fidelity.enabled and fidelity_path.exists():
        out.print(fidelity_table(json.loads(fidelity_path.read_text())))
    out.print(f"run folder: {run.root}   total: {total:.1f}s")
    if run.report.exists():
        out.print(f"report: {run.report}")


def cas_table(result: dict[str, Any]) -> Table:
    """A rich table of CAS results: test accuracy mean ± std per training set."""
    table = Table(title="Classification Accuracy Score (real test split)")
    table.add_column("trained on")
    table.add_column("images", justify="right")
    table.add_column("test accuracy", justify="right")
    table.add_column("val accuracy", justify="right")
    order = ["real", "synthetic", "real+synthetic"]
    names = sorted(result["train_sets"], key=lambda n: (order.index(n) if n in order else 9, n))
    for name in names:
        res = result["train_sets"][name]
        s = res["summary"]
        runs = res["runs"]
        val = sum(r["best_val_accuracy"] for r in runs) / len(runs)
        table.add_row(
            name,
            str(runs[0]["n_train"]),
            f"{s['test_accuracy_mean']:.4f} ± {s['test_accuracy_std']:.4f}",
            f"{val:.4f}",
        )
    return table


def labels_table(result: dict[str, Any]) -> Table:
    """Per class: images, objects found, mean mask area, images whose own class was missed."""
    table = Table(
        title=f"labels ({result['method']}): {result['objects']} objects in "
        f"{result['images']} images, own class missed in {result['own_class_missing']}"
    )
    for col in ("class", "images", "objects", "mean mask area", "own class missed"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, row in result["per_class"].items():
        area = row["mean_mask_area"]
        table.add_row(
            name,
            str(row["images"]),
            str(row["objects"]),
            "-" if area is None else f"{area:.1%}",
            str(row["own_class_missing"]),
        )
    return table


def curate_table(result: dict[str, Any]) -> Table:
    """Kept and dropped images per class, and the leaks."""
    reasons = sorted({k for c in result["per_class"].values() for k in c["dropped"]})
    table = Table(
        title=f"curate: kept {result['kept']} of {result['images']} images "
        f"({result['leaks']} leaks of real val/test dropped)"
    )
    for col in ["class", "kept", *reasons]:
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, c in result["per_class"].items():
        cells = [str(c["dropped"].get(k, 0)) for k in reasons]
        table.add_row(name, f"{c['kept']}/{c['images']}", *cells)
    return table


def retrieve_table(result: dict[str, Any]) -> Table:
    """Retrieved images per class, how many pool images matched each class best, similarity."""
    table = Table(
        title=f"retrieve ({result['by']}): {result['retrieved']} of {result['pool_images']} pool "
        f"images ({result['leaks_skipped']} copies of real val/test skipped)"
    )
    for col in ("class", "retrieved", "matched best", "mean similarity"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, n in result["per_class"].items():
        sim = result["mean_similarity"][name]
        table.add_row(
            name,
            str(n),
            str(result["matched_per_class"][name]),
            "" if sim is None else f"{sim:.3f}",
        )
    return table


def continual_table(result: dict[str, Any]) -> Table:
    """A rich table of the continual-learning results: A_auc and A_last per stream and method."""
    tasks = " | ".join(", ".join(t) for t in result["config"]["tasks"])
    table = Table(title="Continual learning (online, class-incremental)", caption=f"tasks: {tasks}")
    ood = any("ood_a_last" in m["summary"] for s in result["streams"].values() for m in s.values())
    for col in [
        "stream",
        "method",
        "A_auc",
        "A_last",
        *(["OOD A_auc", "OOD A_last"] if ood else []),
    ]:
        table.add_column(col)
    for stream, methods in result["streams"].items():
        for method, entry in methods.items():
            cells = [
                f"{entry['summary'][m]['mean']:.4f} ± {entry['summary'][m]['std']:.4f}"
                for m in ("a_auc", "a_last", *(("ood_a_auc", "ood_a_last") if ood else ()))
            ]
            table.add_row(stream, method, *cells)
    return table


def fidelity_table(result: dict[str, Any]) -> Table:
    """A rich table of the fidelity metrics, overall and per class."""
    ext = result["extractor"]
    table = Table(
        title=f"Fidelity of the synthetic images vs real {result.get('real_split', 'train')} "
        f"(features: {ext})",
        caption="FID, KID: lower is better; precision, recall, density, coverage: higher is "
        "better; label fidelity: share the real-trained classifier gives its own label; "
        "diversity: mean pairwise feature distance within a class",
    )
    keys = {"fid": "FID", "kid_mean": "KID", "precision": "precision", "recall": "recall"}
    keys |= {"density": "density", "coverage": "coverage"}
    if "label_fidelity" in result["overall"]:
        keys |= {"label_fidelity": "label fidelity"}
    keys |= {"diversity_real": "diversity real", "diversity_synthetic": "diversity synth"}
    table.add_column("class")
    for label in keys.values():
        table.add_column(label, justify="right")
    clip = result.get("clip_score")
    if clip:
        table.add_column("CLIP score", justify="right")

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3g}"

    rows = [("overall", result["overall"], clip["mean"] if clip else None)]
    rows += [
        (name, m, clip["per_class"].get(name) if clip else None)
        for name, m in result["per_class"].items()
    ]
    if result.get("real_baseline"):
        base = result["real_baseline"]
        rows.append((f"real {base['real_split']} (baseline)", base, None))
    for name, m, c in rows:
        table.add_row(name, *[fmt(m.get(k)) for k in keys], *([fmt(c)] if clip else []))
    return table


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
