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


def alternating_rates(fns: dict[str, Callable[[], object]], items: int, rounds: int = 8, window: float = 0.5) -> dict:
    """Items per second of each function, timed in alternating rounds of ``window`` seconds (best round each), so
    that a busy, noisy CPU slows all of them alike; ``items`` is how many items one call handles."""
    best = {name: items * calls_per_second(fn, window, warmup=3) for name, fn in fns.items()}
    for _ in range(rounds - 1):
        for name, fn in fns.items():
            best[name] = max(best[name], items * calls_per_second(fn, window, warmup=0))
    return best
