"""The face-detector interface: ``FaceDetector.detect(rgb) -> list[Detection]`` and a registry by name."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]  # x, y, w, h in pixels of the original image

# name -> "module:Class", imported on first use so that `import expressnet.faces` stays light
DETECTORS = {
    "blazeface": "expressnet.faces.blazeface:BlazeFaceDetector",
    "haar": "expressnet.faces.haar:HaarDetector",
    "none": "expressnet.faces.whole_image:WholeImageDetector",
}


@dataclass(frozen=True)
class Detection:
    """One face: ``box`` (x, y, w, h) in pixels of the original image, possibly reaching past its edges;
    ``score`` in [0, 1]; ``landmarks`` ((x, y), ...) in pixels when the detector gives them (BlazeFace:
    right eye, left eye, nose tip, mouth, right ear, left ear; "right" is the person's right)."""

    box: Box
    score: float
    landmarks: tuple[tuple[float, float], ...] | None = None

    def clipped_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The box rounded to whole pixels and clipped to a ``width`` x ``height`` image."""
        x, y, w, h = self.box
        x0, y0 = max(0, round(x)), max(0, round(y))
        x1, y1 = min(width, round(x + w)), min(height, round(y + h))
        return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


class FaceDetector(ABC):
    """Finds faces in an RGB uint8 image (H, W, 3)."""

    name: str = "detector"

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in ``image``, best first; an empty list when there is none."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) with boxes (N, 4), all as x0, y0, x1, y1."""
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1, y1 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def detections_from_boxes(boxes: Sequence[Sequence[float]]) -> list[Detection]:
    """User-supplied boxes (x, y, w, h) as detections with score 1."""
    out = []
    for box in boxes:
        if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
            raise ValueError(f"a face box is (x, y, w, h) with w, h > 0, got {tuple(box)}")
        out.append(Detection(tuple(float(v) for v in box), 1.0))
    return out


def list_detectors() -> list[str]:
    return sorted(DETECTORS)


def create_detector(name: str, **options) -> FaceDetector:
    """A detector by name (see :data:`DETECTORS`); ``options`` go to its constructor."""
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r} (choose from {', '.join(list_detectors())})")
    module, cls = DETECTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)
