"""The one rich progress setup: bars on stderr with count, throughput and time left; silent when not a TTY
or when disabled (CI logs, pipes, worker processes)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def progress_bar(*fields: ProgressColumn | str, enabled: bool = True, transient: bool = True) -> Progress | None:
    """A started-on-enter rich :class:`Progress` (or None when ``enabled`` is false or stderr is no terminal).

    ``fields`` are extra columns after the bar: rich columns or format strings on the task
    (``"loss {task.fields[loss]:.4f}"``)."""
    if not enabled or not sys.stderr.isatty():
        return None
    extra = [TextColumn(f) if isinstance(f, str) else f for f in fields]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(), *extra)
    return Progress(
        *columns, TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=transient
    )


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """``items`` with a progress bar (see :func:`progress_bar`)."""
    bar = progress_bar(enabled=enabled)
    if bar is None:
        yield from items
        return
    with bar:
        yield from bar.track(items, total=total, description=description)
