"""Per-track probability smoothing for video, and the label-flicker measure smoothing is judged by."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .sources import check_video_options


class ProbabilitySmoother:
    """Exponential smoothing of class probabilities per track: ``p = alpha * new + (1 - alpha) * p``
    (``alpha`` = 1 is no smoothing; smaller is steadier). State is dropped for tracks that ended.
    :meth:`state_dict` and :meth:`load_state_dict` save and restore it exactly (a resumed video)."""

    def __init__(self, alpha: float) -> None:
        check_video_options(smooth=alpha)
        self.alpha = alpha
        self.state: dict[int, np.ndarray] = {}

    def update(self, track_id: int, probabilities: np.ndarray) -> np.ndarray:
        previous = self.state.get(track_id)
        smoothed = probabilities if previous is None else self.alpha * probabilities + (1 - self.alpha) * previous
        self.state[track_id] = smoothed
        return smoothed

    def keep_only(self, track_ids: Iterable[int]) -> None:
        alive = set(track_ids)
        self.state = {k: v for k, v in self.state.items() if k in alive}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (JSON-serialisable; floats round-trip exactly)."""
        return {"alpha": self.alpha, "tracks": [[k, v.tolist()] for k, v in self.state.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        check_video_options(smooth=state["alpha"])
        self.alpha = state["alpha"]
        self.state = {int(k): np.array(v, dtype=np.float64) for k, v in state["tracks"]}


def label_changes(labels: Sequence[str]) -> int:
    """How many times the label changes along one track's sequence."""
    return sum(a != b for a, b in itertools.pairwise(labels))


def flicker_rate(tracks: Iterable[Sequence[str]]) -> float:
    """Fraction of consecutive processed frames (within tracks) where the label changes."""
    tracks = list(tracks)
    pairs = sum(max(0, len(t) - 1) for t in tracks)
    return sum(label_changes(t) for t in tracks) / pairs if pairs else 0.0
