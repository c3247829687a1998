"""From a detection to the face crop the classifier sees: the paper's box rule and optional eye alignment."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .base import Box, Detection

# crop rule -> margin added on each side, as a fraction of the box width/height
CROP_MARGINS = {
    "paper": 0.1,  # x, y moved out by 10 % of w, h; w, h grown by 20 % (the paper's BlazeFace crop)
    "box": 0.0,  # the detector's box as it is
}
RIGHT_EYE, LEFT_EYE = 0, 1  # BlazeFace keypoint order (the person's right eye is on the image's left)


def expand_box(box: Box, width: int, height: int, rule: str = "paper") -> tuple[int, int, int, int]:
    """``box`` (x, y, w, h) grown by the rule's margin on every side, clipped to a ``width`` x ``height``
    image and rounded to whole pixels; never empty (at least 1 x 1)."""
    if rule not in CROP_MARGINS:
        raise ValueError(f"unknown face crop rule {rule!r} (choose from {', '.join(CROP_MARGINS)})")
    x, y, w, h = box
    m = CROP_MARGINS[rule]
    x0 = min(max(0, round(x - m * w)), width - 1)
    y0 = min(max(0, round(y - m * h)), height - 1)
    x1 = max(min(width, round(x + (1 + m) * w)), x0 + 1)
    y1 = max(min(height, round(y + (1 + m) * h)), y0 + 1)
    return x0, y0, x1 - x0, y1 - y0


def eye_angle(landmarks: tuple[tuple[float, float], ...]) -> float:
    """Angle in degrees of the line from the person's right eye to their left eye (0 when level)."""
    (rx, ry), (lx, ly) = landmarks[RIGHT_EYE], landmarks[LEFT_EYE]
    return math.degrees(math.atan2(ly - ry, lx - rx))


def crop_face(image: np.ndarray, detection: Detection, rule: str = "paper", align: bool = False) -> np.ndarray:
    """The upright face crop of ``image`` (H, W, C) for ``detection``.

    The crop is the expanded box, turned by the detection's ``rotation`` (a face found on a rotated copy).
    With ``align`` (and eye landmarks), the image is instead rotated about the eye midpoint so the eyes are
    level (any roll, sideways and upside-down faces included); the window is the expanded box moved with the
    rotation (its sides swapped when the face lies sideways), and pixels from outside the image repeat its
    border.
    """
    height, width = image.shape[:2]
    x, y, w, h = expand_box(detection.box, width, height, rule)
    if not align or not detection.landmarks or len(detection.landmarks) <= LEFT_EYE:
        return np.rot90(image[y : y + h, x : x + w], detection.rotation // 90)
    (rx, ry), (lx, ly) = detection.landmarks[RIGHT_EYE], detection.landmarks[LEFT_EYE]
    angle = eye_angle(detection.landmarks)
    rotation = cv2.getRotationMatrix2D(((rx + lx) / 2, (ry + ly) / 2), angle, 1.0)
    cx, cy = rotation @ (x + w / 2, y + h / 2, 1.0)  # the box centre after the rotation
    if 45 < abs(angle) < 135:
        w, h = h, w
    rotation[:, 2] -= (cx - w / 2, cy - h / 2)  # rotate the whole image, then take the window: one warp
    return cv2.warpAffine(
        np.ascontiguousarray(image), rotation, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
