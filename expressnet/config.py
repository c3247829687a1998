"""Frozen config dataclasses from plain dicts (YAML, JSON metadata), rejecting unknown keys.

One function for every config class (model, training, augmentation, preprocessing): nested dataclass fields
are built recursively and lists become tuples where the field is a tuple.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return config_from_dict(hint, value, where)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for option in typing.get_args(hint):
            if option is type(None):
                continue
            if (dataclasses.is_dataclass(option) and isinstance(value, dict)) or (
                typing.get_origin(option) is tuple and isinstance(value, list)
            ):
                return _convert(option, value, where)
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        return tuple(_convert(inner, v, where) if inner is not None else _tuple_deep(v) for v in value)
    return value


def _tuple_deep(value: Any) -> Any:
    return tuple(_tuple_deep(v) for v in value) if isinstance(value, list) else value


def config_from_dict(cls: type[T], data: dict[str, Any], where: str | None = None) -> T:
    """``cls(**data)`` for a dataclass, with nested dataclasses and tuples rebuilt; ``ValueError`` naming
    the unknown keys (and ``where`` they came from) otherwise."""
    label = where or cls.__name__
    if not isinstance(data, dict):
        raise ValueError(f"{label}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {label} keys {unknown} (known: {', '.join(sorted(names))})")
    return cls(**{k: _convert(hints[k], v, f"{label} {k}") for k, v in data.items()})
