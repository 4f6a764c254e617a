"""The base of every recipe section (unknown keys are errors) and helpers the sections share."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base model: unknown keys are errors, values are validated on assignment too, and no
    number is infinite or NaN."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def false_is_off(value: Any) -> Any:
    """YAML 1.1 reads an unquoted ``off`` as ``false``: both mean the ``off`` choice."""
    return "off" if value is False else value


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside an annotation like ``X | None``, else the annotation."""
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation
