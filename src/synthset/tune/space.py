"""The search space of ``synthset tune``: knobs as dotted recipe paths, their Optuna
distributions, and trial values applied to a recipe like ``--set`` overrides."""

from __future__ import annotations

import hashlib
import json
from typing import Any, get_args

from synthset.errors import SynthsetError
from synthset.recipe import Recipe, TuneParam, apply_overrides, recipe_from_dict, tune_field


def is_int_field(path: str) -> bool:
    """True when the recipe field at ``path`` holds an int (searched with ``suggest_int``)."""
    annotation = tune_field(path).annotation
    args = set(get_args(annotation)) or {annotation}
    return int in args and float not in args


def apply_params(recipe: Recipe, params: dict[str, Any]) -> Recipe:
    """``recipe`` with ``params`` (dotted path → value) applied like ``--set`` overrides."""
    data = recipe.model_dump(mode="json")
    overrides = [f"{path}={json.dumps(value)}" for path, value in params.items()]
    return recipe_from_dict(apply_overrides(data, overrides))


def check_space(recipe: Recipe, space: dict[str, TuneParam]) -> None:
    """Every value a knob can take must give a valid recipe (one-line error otherwise)."""
    for path, param in space.items():
        if param.choices is not None:
            values: list[Any] = list(param.choices)
        else:
            values = [param.low, param.high]
            if is_int_field(path):
                if any(v is not None and float(v) != int(v) for v in (*values, param.step)):
                    raise SynthsetError(
                        f"tune.space {path}: an integer field needs whole low/high/step values"
                    )
                values = [int(v) for v in values]
        for value in values:
            try:
                apply_params(recipe, {path: value})
            except SynthsetError as exc:
                raise SynthsetError(f"tune.space {path}={value!r} is not allowed: {exc}") from None


def suggest(trial: Any, path: str, param: TuneParam) -> Any:
    """The trial's value for one knob."""
    if param.choices is not None:
        return trial.suggest_categorical(path, param.choices)
    assert param.low is not None and param.high is not None
    if is_int_field(path):
        step = int(param.step or 1)
        return trial.suggest_int(path, int(param.low), int(param.high), step=step, log=param.log)
    return trial.suggest_float(path, param.low, param.high, step=param.step, log=param.log)


def recipe_values(recipe: Recipe, space: dict[str, TuneParam]) -> dict[str, Any]:
    """The recipe's own values of the knobs whose range or choices contain them."""
    values = {}
    for path, param in space.items():
        node: Any = recipe
        for part in path.split("."):
            node = getattr(node, part, None)
        if param.choices is not None:
            if node in param.choices:
                values[path] = node
        elif isinstance(node, int | float) and _in_range(float(node), param):
            values[path] = int(node) if is_int_field(path) else float(node)
    return values


def _in_range(value: float, param: TuneParam) -> bool:
    assert param.low is not None and param.high is not None
    if not param.low <= value <= param.high:
        return False
    if param.step is None:
        return True
    steps = (value - param.low) / param.step
    return abs(steps - round(steps)) < 1e-9


def study_key(recipe: Recipe, space: dict[str, TuneParam]) -> str:
    """A hash of everything a trial's value depends on: the (stage) base recipe and the space.
    Changing either starts a new study in the same ``study.db``; changing only ``n_trials`` or
    ``timeout`` resumes the old one."""
    data = recipe.model_dump(mode="json", exclude={"name", "output_dir", "report"})
    data["tune"] = {k: v for k, v in data["tune"].items() if k not in ("n_trials", "timeout")}
    data["space"] = {k: v.model_dump(mode="json") for k, v in space.items()}
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
