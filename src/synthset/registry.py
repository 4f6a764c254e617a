"""Registries: a table from a name to the ``"module:attr"`` that implements it, imported on first
use. Adding a component is one line in its package's table, not another branch of an if-chain."""

from __future__ import annotations

from importlib import import_module
from typing import Any, Generic, TypeVar

from synthset.errors import SynthsetError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names → lazily imported implementations. ``field`` is the recipe field (or option) that
    holds the name, for the one-line error an unknown name gets."""

    def __init__(self, field: str, entries: dict[str, str]) -> None:
        self.field = field
        #: name → ``"module:attr"``; a plugin (or a test) adds a component with one item here
        self.entries = dict(entries)

    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        return list(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def load(self, name: str) -> T:
        """The implementation registered as ``name`` (imported now); an unknown name is a
        one-line error listing the choices."""
        target = self.entries.get(name)
        if target is None:
            raise SynthsetError(
                f"{self.field}: unknown {name!r}; choose one of {', '.join(self.names())}"
            )
        module, _, attr = target.partition(":")
        found: Any = getattr(import_module(module), attr)
        return found
