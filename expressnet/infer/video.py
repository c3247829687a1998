"""Video for the recognizer: frames from files and cameras, an IoU tracker, per-track probability smoothing,
and the label-flicker measure that smoothing is judged by."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..data.base import DataError
from ..faces.base import box_iou

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")


def camera_index(source: str | Path | int) -> int | None:
    """The camera index when ``source`` names a camera (an int or a string of digits), else None."""
    if isinstance(source, int):
        return source
    text = str(source)
    return int(text) if text.isdigit() and not Path(text).exists() else None


def is_video_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class VideoFrame:
    index: int  # frame number in the source, from 0
    time_s: float  # from the index and the file's FPS; wall-clock seconds since opening for cameras
    image: np.ndarray  # RGB uint8 (H, W, 3)


class VideoSource:
    """Every ``every``-th frame of a video file or camera as RGB, up to ``max_frames`` processed frames.

    Raises :class:`DataError` naming the source when it cannot be opened or decodes no frame.
    """

    def __init__(self, source: str | Path | int, every: int = 1, max_frames: int | None = None) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every, self.max_frames = every, max_frames
        self.camera = camera_index(source)
        self.name = f"camera:{self.camera}" if self.camera is not None else str(source)
        if self.camera is None and not Path(source).is_file():
            raise DataError(f"{source}: file not found")
        self.capture = cv2.VideoCapture(self.camera if self.camera is not None else str(source))
        if not self.capture.isOpened():
            raise DataError(f"{self.name}: cannot open as a video (not a video file, unsupported codec or no camera)")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else 0.0
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)) if self.camera is None else 0
        self.frame_count = count if count > 0 else None
        self.size = (int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    @property
    def expected_frames(self) -> int | None:
        """How many frames iteration will yield, when the frame count is known."""
        if self.frame_count is None:
            return self.max_frames
        n = -(-self.frame_count // self.every)
        return n if self.max_frames is None else min(n, self.max_frames)

    def __iter__(self) -> Iterator[VideoFrame]:
        start = time.monotonic()
        index = processed = 0
        while self.max_frames is None or processed < self.max_frames:
            if index % self.every:
                if not self.capture.grab():
                    break
            else:
                ok, bgr = self.capture.read()
                if not ok:
                    break
                live = self.camera is not None or not self.fps
                seconds = time.monotonic() - start if live else index / self.fps
                yield VideoFrame(index, seconds, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                processed += 1
            index += 1
        if processed == 0 and self.camera is None:
            raise DataError(f"{self.name}: no decodable video frame")

    def close(self) -> None:
        self.capture.release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def xyxy(box: Sequence[float]) -> np.ndarray:
    x, y, w, h = box
    return np.array([x, y, x + w, y + h], dtype=np.float64)


class IoUTracker:
    """Keeps an id per face across frames: each new box takes the free track it overlaps most (greedy, best
    IoU first, IoU >= ``iou_threshold``); others start new tracks; a track unseen for more than
    ``max_missed`` processed frames ends."""

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


class ProbabilitySmoother:
    """Exponential smoothing of class probabilities per track: ``p = alpha * new + (1 - alpha) * p``
    (``alpha`` = 1 is no smoothing; smaller is steadier). State is dropped for tracks that ended."""

    def __init__(self, alpha: float) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"smoothing alpha must be in (0, 1], got {alpha}")
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


def label_changes(labels: Sequence[str]) -> int:
    """How many times the label changes along one track's sequence."""
    return sum(a != b for a, b in itertools.pairwise(labels))


def flicker_rate(tracks: Iterable[Sequence[str]]) -> float:
    """Fraction of consecutive processed frames (within tracks) where the label changes."""
    tracks = list(tracks)
    pairs = sum(max(0, len(t) - 1) for t in tracks)
    return sum(label_changes(t) for t in tracks) / pairs if pairs else 0.0
