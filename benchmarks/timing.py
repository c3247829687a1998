"""Shared timing helper for the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable


def calls_per_second(fn: Callable[[], object], seconds: float, warmup: int = 2) -> float:
    """How many times per second ``fn`` runs, timed for at least ``seconds`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)
