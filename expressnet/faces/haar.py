"""OpenCV's frontal-face Haar cascade: the fallback detector (no landmarks, more false positives)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from .base import RETRIES, Detection, FaceDetector

CASCADE = "haarcascade_frontalface_default.xml"  # shipped by opencv-python(-headless) < 5


def weight_to_score(weight: float) -> float:
    """The cascade's last-stage weight (about -1..13 on real photos; ~6 for a clear face) squashed to (0, 1),
    0.5 at weight 2."""
    return 1.0 / (1.0 + math.exp(-(weight - 2.0)))


class HaarDetector(FaceDetector):
    """``detectMultiScale3`` on the equalised gray image; faces smaller than ``min_size_fraction`` of the
    shorter image side (and 24 px) are ignored; the score comes from the cascade's level weight. ``retry`` and
    ``no_face``: see :class:`FaceDetector`."""

    name = "haar"

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size_fraction: float = 0.04,
        min_score: float = 0.0,
        retry: str | Sequence[str] | None = RETRIES,
        no_face: str = "skip",
    ) -> None:
        super().__init__(retry, no_face)
        path = cv2.data.haarcascades + CASCADE
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise FileNotFoundError(f"{path}: OpenCV Haar cascade not found (opencv 5 wheels ship none; use <5)")
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_size_fraction, self.min_score = min_size_fraction, min_score

    def __repr__(self) -> str:
        return f"HaarDetector(min_neighbors={self.min_neighbors}, min_score={self.min_score})"

    def find(self, image: np.ndarray) -> list[Detection]:
        gray = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        gray = cv2.equalizeHist(gray)
        side = min(max(24, round(min(gray.shape) * self.min_size_fraction)), min(gray.shape))
        boxes, _, weights = self.cascade.detectMultiScale3(
            gray, self.scale_factor, self.min_neighbors, minSize=(side, side), outputRejectLevels=True
        )
        found = [
            Detection(tuple(float(v) for v in box), weight_to_score(float(weight)))
            for box, weight in zip(boxes, np.ravel(weights))
        ]
        found = [d for d in found if d.score >= self.min_score]
        return sorted(found, key=lambda d: -d.score)
