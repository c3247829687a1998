"""One registry idiom for everything chosen by name (model presets, face detectors, dataset kinds,
optimizers, schedules, classifier backends).

    OPTIMIZERS = Registry("optimizer")

    @OPTIMIZERS.register("adamw")
    def adamw(params, cfg): ...

    OPTIMIZERS.get("adamw")   # or OPTIMIZERS["adamw"]; an unknown name raises UnknownName
                              # (a KeyError and a ValueError) listing the choices

A value may also be a ``"module:attribute"`` string, imported on first ``get`` (keeps imports light).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError, ValueError):
    """A name that is not registered; a ``KeyError`` (lookup) and a ``ValueError`` (bad setting) alike."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Named entries of one kind; registering a name twice is an error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, value: T | str | None = None) -> Any:
        """``register(name, value)``, or ``@register(name)`` as a decorator."""
        if value is None:

            def decorator(obj: T) -> T:
                self.register(name, obj)
                return obj

            return decorator
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = value
        return value

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise UnknownName(f"unknown {self.kind} {name!r} (choose from {', '.join(self.names())})")
        value = self._entries[name]
        if isinstance(value, str) and ":" in value:
            module, attribute = value.split(":")
            value = getattr(importlib.import_module(module), attribute)
            self._entries[name] = value
        return value  # type: ignore[return-value]

    __getitem__ = get

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self.get(name)) for name in self.names()]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
