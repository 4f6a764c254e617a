"""Loading a recipe: YAML, --set overrides, and pydantic errors as one line naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from synthset.errors import SynthsetError
from synthset.recipe.base import _model_in
from synthset.recipe.model import Recipe
from synthset.redaction import redact


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SynthsetError(
                f"--set {item!r}: write it as key.path=value, e.g. generate.steps=20"
            )
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise SynthsetError(f"--set {key}: '{part}' is a value, not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise SynthsetError(f"--set {key}: value is not valid YAML ({exc.problem})") from None
    return data


def load_recipe(
    path: Path | str, overrides: list[str] | None = None, output_dir: Path | None = None
) -> Recipe:
    """Read a recipe YAML file, apply ``--set`` overrides and validate it. ``output_dir``
    (``--out``) is taken verbatim as a path, never parsed as YAML."""
    path = Path(path)
    if not path.is_file():
        raise SynthsetError(f"recipe file not found: {path} (give the path to a .yaml recipe)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SynthsetError(
            f"recipe {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SynthsetError(
            f"recipe {path}{_yaml_where(exc)}: not valid YAML{_yaml_why(exc)}"
        ) from None
    if not isinstance(data, dict):
        raise SynthsetError(f"recipe {path}: the top level must be a mapping of sections")
    data = apply_overrides(data, overrides or [])
    if output_dir is not None:
        data["output_dir"] = str(output_dir)
    return recipe_from_dict(data)


def _yaml_where(exc: yaml.YAMLError) -> str:
    """`` line L, column C`` of a YAML error (empty when PyYAML does not say)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def _yaml_why(exc: yaml.YAMLError) -> str:
    """PyYAML's one-phrase reason (its report spans several lines with context)."""
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    why = "; ".join(" ".join(str(p).split()) for p in parts if p)
    return f" ({why})" if why else ""


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Validate a recipe dict, turning pydantic's report into one line."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise SynthsetError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    """The first error of a pydantic report as ``recipe error at a.b: what is wrong; the fix``."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    path = ".".join(loc)
    where = f"recipe error at {path}" if path else "recipe error"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(Recipe, err["loc"][:-1])
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"{where}: unknown key{hint}"
    msg = err["msg"].removeprefix("Value error, ")
    if (
        "input" in err
        and err["type"] not in ("missing",)
        and not isinstance(err["input"], dict | list)
    ):
        msg += f" (got {redact(repr(err['input']))})"
    more = len(exc.errors()) - 1
    return f"{where}: {msg}" + (f" [+{more} more]" if more else "")


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model found by walking ``loc`` from ``model``."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML (every default written out) that loads back to the same
    recipe: an ensemble's file has ``generators`` only (the two forms exclude each other)."""
    data = recipe.model_dump(mode="json")
    if recipe.generate is not None and recipe.generate.generators is not None:
        del data["generate"]["generator"]
    return yaml.safe_dump(data, sort_keys=False)
