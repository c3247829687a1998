"""The ``none`` detector: the image is already a face crop."""

from __future__ import annotations

import numpy as np

from .base import Detection, FaceDetector


class WholeImageDetector(FaceDetector):
    """Reports the whole image as one face with score 1."""

    name = "none"

    def find(self, image: np.ndarray) -> list[Detection]:
        height, width = image.shape[:2]
        return [Detection((0.0, 0.0, float(width), float(height)), 1.0)]
