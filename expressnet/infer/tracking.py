"""Face tracks across video frames: an IoU tracker that keeps one id per face."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..faces.base import box_iou


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
