"""Face tracks across video frames: an IoU tracker that keeps one id per face, and :class:`FaceTracks`, the state
one video carries from frame to frame (track ids, smoothed probabilities, blinks), which a resumed run restores
from its :meth:`~FaceTracks.state_dict`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import numpy as np

from ..faces.base import box_iou
from ..faces.blinks import Blink, BlinkCounter
from .smoothing import ProbabilitySmoother


def xyxy(box: Sequence[float]) -> np.ndarray:
    x, y, w, h = box
    return np.array([x, y, x + w, y + h], dtype=np.float64)


class IoUTracker:
    """Keeps an id per face across frames: each new box takes the free track it overlaps most (greedy, best
    IoU first, IoU >= ``iou_threshold``); others start new tracks; a track unseen for more than
    ``max_missed`` processed frames ends. :meth:`state_dict` and :meth:`load_state_dict` save and restore it."""

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 5) -> None:
        self.iou_threshold, self.max_missed = iou_threshold, max_missed
        self.tracks: dict[int, tuple[np.ndarray, int]] = {}  # id -> (last box x0 y0 x1 y1, frames missed)
        self.next_id = 0

    def update(self, boxes: Sequence[Sequence[float]]) -> list[int]:
        """Track ids for ``boxes`` (x, y, w, h) of the next processed frame."""
        new = np.array([xyxy(b) for b in boxes]).reshape(-1, 4)
        ids = list(self.tracks)
        pairs = []
        for column, track_id in enumerate(ids):
            if len(new):
                for row, overlap in enumerate(box_iou(self.tracks[track_id][0], new)):
                    if overlap >= self.iou_threshold:
                        pairs.append((overlap, row, column))
        assigned: list[int | None] = [None] * len(new)
        taken = set()
        for _, row, column in sorted(pairs, reverse=True):
            if assigned[row] is None and column not in taken:
                assigned[row] = ids[column]
                taken.add(column)
        for column, track_id in enumerate(ids):
            if column not in taken:
                box, missed = self.tracks[track_id]
                if missed + 1 > self.max_missed:
                    del self.tracks[track_id]
                else:
                    self.tracks[track_id] = (box, missed + 1)
        for row, box in enumerate(new):
            if assigned[row] is None:
                assigned[row] = self.next_id
                self.next_id += 1
            self.tracks[assigned[row]] = (box, 0)
        return [int(i) for i in assigned]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (JSON-serialisable; floats round-trip exactly)."""
        return {
            "iou_threshold": self.iou_threshold,
            "max_missed": self.max_missed,
            "next_id": self.next_id,
            "tracks": [[k, box.tolist(), missed] for k, (box, missed) in self.tracks.items()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.iou_threshold, self.max_missed = float(state["iou_threshold"]), int(state["max_missed"])
        self.next_id = int(state["next_id"])
        self.tracks = {int(k): (np.array(box, dtype=np.float64), int(m)) for k, box, m in state["tracks"]}


@dataclass(frozen=True)
class BlinkEvent:
    """A blink a track completed at this frame (:class:`~expressnet.faces.blinks.BlinkCounter`'s rule,
    docs/geometry.md): ``start_s`` (first closed sample), ``end_s`` (first open one again), the lowest
    ``min_openness`` in between; ``count``: the track's blinks so far, ``rate_per_minute``: its blinks per minute
    of observed time so far (None before time has passed)."""

    start_s: float
    end_s: float
    min_openness: float
    count: int
    rate_per_minute: float | None

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self) -> dict[str, Any]:
        """JSON: times in seconds (4 decimals), openness (4 decimals), the rate (2 decimals)."""
        rate = None if self.rate_per_minute is None else round(self.rate_per_minute, 2)
        return {
            "start_s": round(self.start_s, 4),
            "end_s": round(self.end_s, 4),
            "duration_s": round(self.duration_s, 4),
            "min_openness": round(self.min_openness, 4),
            "count": self.count,
            "rate_per_min": rate,
        }


class TrackedFace(Protocol):
    """What :class:`FaceTracks` reads of a face (a dataclass: it is copied with ``dataclasses.replace`` to set
    ``track_id``, ``emotion``, ``probabilities`` and ``blink``); ``geometry``: a
    :class:`~expressnet.faces.geometry.FaceGeometry` or None."""

    box: tuple[int, int, int, int]
    probabilities: dict[str, float]
    geometry: Any


F = TypeVar("F", bound=TrackedFace)


def eye_openness(face: TrackedFace) -> float | None:
    """Both eyes' mean openness (the blink rule's sample), or None without geometry."""
    if face.geometry is None:
        return None
    value = float(np.mean(face.geometry.eye_openness))
    return value if math.isfinite(value) else None


class FaceTracks:
    """The state one video carries from frame to frame: a track id per face (:class:`IoUTracker`), with
    ``smooth`` each track's smoothed probabilities (:class:`~expressnet.infer.smoothing.ProbabilitySmoother`;
    the emotion is their argmax), and for faces with geometry each track's blinks
    (:class:`~expressnet.faces.blinks.BlinkCounter` on both eyes' mean openness; a face whose track completes a
    blink at this frame gets ``blink``, a :class:`BlinkEvent`). State of ended tracks is dropped.
    :meth:`state_dict` / :meth:`load_state_dict` save and restore all of it, so a video resumed between frames
    gives the same ids, probabilities and blinks as one never stopped."""

    def __init__(self, smooth: float | None = None, tracker: IoUTracker | None = None) -> None:
        self.tracker = tracker or IoUTracker()
        self.smoother = ProbabilitySmoother(smooth) if smooth is not None else None
        self.blinks: dict[int, BlinkCounter] = {}

    def set_smooth(self, smooth: float | None) -> None:
        """Smooth from the next frame on with ``smooth`` (None: not at all); track ids and blinks are kept, and
        each track's smoothed probabilities while smoothing stays on."""
        smoothed = {} if self.smoother is None else self.smoother.state
        self.smoother = None if smooth is None else ProbabilitySmoother(smooth)
        if self.smoother is not None:
            self.smoother.state = smoothed

    def update(self, faces: Sequence[F], time_s: float) -> list[F]:
        """``faces`` of the next processed frame (at ``time_s``) with their track ids, smoothed probabilities
        and blink events."""
        ids = self.tracker.update([f.box for f in faces])
        out = [
            replace(face, track_id=track_id, **self.changes(face, track_id, time_s))
            for face, track_id in zip(faces, ids)
        ]
        alive = set(self.tracker.tracks)
        if self.smoother is not None:
            self.smoother.keep_only(alive)
        self.blinks = {k: v for k, v in self.blinks.items() if k in alive}
        return out

    def changes(self, face: TrackedFace, track_id: int, time_s: float) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if self.smoother is not None:
            names = list(face.probabilities)
            smoothed = self.smoother.update(track_id, np.array([face.probabilities[c] for c in names]))
            changes["emotion"] = names[int(np.argmax(smoothed))]
            changes["probabilities"] = {c: float(p) for c, p in zip(names, smoothed)}
        openness = eye_openness(face)
        if openness is not None:
            counter = self.blinks.setdefault(track_id, BlinkCounter())
            blink = counter.update(time_s, openness)
            if blink is not None:
                changes["blink"] = self.event(blink, counter)
        return changes

    @staticmethod
    def event(blink: Blink, counter: BlinkCounter) -> BlinkEvent:
        return BlinkEvent(
            blink.start_s, blink.end_s, blink.min_openness, len(counter.blinks), counter.rate_per_minute()
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (JSON-serialisable)."""
        return {
            "tracker": self.tracker.state_dict(),
            "smoother": None if self.smoother is None else self.smoother.state_dict(),
            "blinks": [[k, counter.state_dict()] for k, counter in self.blinks.items()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of tracks made with the same ``smooth`` setting."""
        if (state["smoother"] is None) != (self.smoother is None):
            raise ValueError("the saved video state was made with another smooth setting; it cannot be resumed")
        self.tracker.load_state_dict(state["tracker"])
        if self.smoother is not None:
            self.smoother.load_state_dict(state["smoother"])
        self.blinks = {}
        for k, saved in state["blinks"]:
            self.blinks[int(k)] = counter = BlinkCounter()
            counter.load_state_dict(saved)
