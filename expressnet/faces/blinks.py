"""Blinks from a time series of eye openness, one :class:`BlinkCounter` per tracked face.

The rule (docs/geometry.md), on the openness of both eyes together (their mean, :mod:`.geometry`'s lid gap
over eye width), relative to the track's own open-eye level so that narrow and wide eyes count alike:

* the **baseline** is the open eyes' level: an exponential moving average of the openness with a time constant
  of ``baseline_s`` seconds, not updated while the eyes are closing (so a blink does not move it), but again
  once a closure has outlasted a blink (so that a lasting change, a gaze kept low, is followed);
* a **closure** starts at the first sample below ``closed_fraction`` x baseline, while the baseline says the
  eyes are open (at least ``min_baseline``; below it they are shut or unreadable and nothing starts), and ends
  at the first sample back above ``open_fraction`` x baseline; it is a **blink** when it lasted at most
  ``max_duration_s`` (measured between those two samples), else the eyes were shut on purpose and nothing is
  counted;
* the **rate** is blinks per minute of observed time (from the first to the latest sample).

Samples may come at any rate (every frame, every n-th frame); a gap in the samples longer than
``max_duration_s`` (the face was lost) ends any closure without a blink.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..config import config_from_dict


@dataclass(frozen=True)
class BlinkRule:
    """The blink rule's thresholds (see the module docstring); measured on the real videos in
    docs/geometry.md."""

    closed_fraction: float = 0.7  # closing below 70 % of the track's open-eye baseline ...
    open_fraction: float = 0.8  # ... open again at 80 % of it ...
    max_duration_s: float = 0.5  # ... within half a second: a blink (blinks last about 0.1-0.4 s)
    baseline_s: float = 2.0  # the baseline's time constant
    min_baseline: float = 0.12  # no closure starts while the baseline is lower (eyes shut, cast down, unreadable)

    def __post_init__(self) -> None:
        if not 0 < self.closed_fraction < self.open_fraction <= 1:
            raise ValueError(
                f"need 0 < closed_fraction < open_fraction <= 1, got {self.closed_fraction}, {self.open_fraction}"
            )
        for name in ("max_duration_s", "baseline_s", "min_baseline"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Blink:
    """One blink: ``start_s`` (first sample below the closed threshold), ``end_s`` (first sample open again)
    and the lowest openness in between."""

    start_s: float
    end_s: float
    min_openness: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class BlinkCounter:
    """Turns one track's eye openness over time into :class:`Blink` events and a blink rate.

    ``update(time_s, openness)`` for each sample, in time order (``openness`` None: no measurement this time);
    it returns the blink that the sample completed, if any. :meth:`state_dict` and :meth:`load_state_dict`
    save and restore everything, so that a run resumed from a saved state gives the same events.
    """

    def __init__(self, rule: BlinkRule | None = None) -> None:
        self.rule = rule or BlinkRule()
        self.baseline: float | None = None
        self.first_s: float | None = None
        self.last_s: float | None = None
        self.closed_since: float | None = None  # time of the first closed sample of the current closure
        self.closed_min = math.inf
        self.blinks: list[Blink] = []

    def __repr__(self) -> str:
        return f"BlinkCounter(blinks={len(self.blinks)}, baseline={self.baseline}, rule={self.rule})"

    def update(self, time_s: float, openness: float | None) -> Blink | None:
        """Feed one sample; returns the blink it completed, else None."""
        rule = self.rule
        if self.last_s is not None and time_s < self.last_s:
            raise ValueError(f"samples must come in time order: {time_s} after {self.last_s}")
        if openness is None or not math.isfinite(openness):
            return None
        if self.last_s is not None and time_s - self.last_s > rule.max_duration_s:
            self.closed_since, self.closed_min = None, math.inf  # the face was lost: no blink across the gap
        dt = 0.0 if self.last_s is None else time_s - self.last_s
        self.first_s = time_s if self.first_s is None else self.first_s
        self.last_s = time_s
        if self.baseline is None:
            self.baseline = openness
            return None
        blink = None
        if self.closed_since is None:
            if self.baseline >= rule.min_baseline and openness < rule.closed_fraction * self.baseline:
                self.closed_since, self.closed_min = time_s, openness
                return None
            self.follow(openness, dt)
        elif openness >= rule.open_fraction * self.baseline:
            if time_s - self.closed_since <= rule.max_duration_s:
                blink = Blink(self.closed_since, time_s, self.closed_min)
                self.blinks.append(blink)
            self.closed_since, self.closed_min = None, math.inf
        else:
            self.closed_min = min(self.closed_min, openness)
            if time_s - self.closed_since > rule.max_duration_s:  # shut on purpose: let the baseline follow
                self.follow(openness, dt)
        return blink

    def follow(self, openness: float, dt: float) -> None:
        """Move the baseline towards ``openness`` after ``dt`` seconds (exponential moving average)."""
        self.baseline += (openness - self.baseline) * (1 - math.exp(-dt / self.rule.baseline_s))

    @property
    def observed_s(self) -> float:
        """Seconds from the first to the latest sample."""
        return 0.0 if self.first_s is None else self.last_s - self.first_s

    def rate_per_minute(self) -> float | None:
        """Blinks per minute of observed time; None before any time has passed."""
        return None if self.observed_s <= 0 else 60.0 * len(self.blinks) / self.observed_s

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (JSON-serialisable)."""
        return {
            "rule": asdict(self.rule),
            "baseline": self.baseline,
            "first_s": self.first_s,
            "last_s": self.last_s,
            "closed_since": self.closed_since,
            "closed_min": None if math.isinf(self.closed_min) else self.closed_min,
            "blinks": [[b.start_s, b.end_s, b.min_openness] for b in self.blinks],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.rule = config_from_dict(BlinkRule, state["rule"])
        self.baseline, self.first_s, self.last_s = state["baseline"], state["first_s"], state["last_s"]
        self.closed_since = state["closed_since"]
        self.closed_min = math.inf if state["closed_min"] is None else state["closed_min"]
        self.blinks = [Blink(*b) for b in state["blinks"]]
