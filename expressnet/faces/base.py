"""The face-detector interface: ``FaceDetector.detect(rgb) -> list[Detection]`` and a registry by name.

Every detector shares what :meth:`FaceDetector.detect` adds to one pass (:meth:`FaceDetector.find`): when
the pass finds nothing, a small image (a face crop) is tried padded with black, and then the image turned by
90, 270 and 180 degrees; a face found lying sideways or weakly is checked on the copy turned upright; what a
copy finds is mapped back, with the turn in :attr:`Detection.rotation`; ``no_face="whole"`` reports the whole
image (score 0) when nothing is found. The constants below are the measured thresholds (see README).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from ..registry import Registry

Box = tuple[float, float, float, float]  # x, y, w, h in pixels of the original image
Point = tuple[float, float]

# name -> "module:Class", imported on first use so that `import expressnet.faces` stays light
DETECTORS: Registry[type[FaceDetector]] = Registry("face detector")
DETECTORS.register("blazeface", "expressnet.faces.blazeface:BlazeFaceDetector")
DETECTORS.register("haar", "expressnet.faces.haar:HaarDetector")
DETECTORS.register("none", "expressnet.faces.whole_image:WholeImageDetector")

RETRIES = ("pad", "rotate")  # what detect() tries when a pass finds nothing (the default: both)
NO_FACE_RULES = ("skip", "whole")  # no face found: no result, or the whole image as the face (score 0)
PAD_FRACTIONS = (0.5, 1.0)  # pad retries: half, then all of the image's width/height added on each side ...
PAD_MODE = cv2.BORDER_CONSTANT  # ... in black (found more RAF-DB crops than repeated edges: see README) ...
PAD_MAX_SIDE = 576  # ... for images up to 576 px (face crops; larger faceless frames gave false faces) ...
PAD_SCORE_MARGIN = 0.1  # ... keeping faces that score down to min_score - 0.1 there (0.4 for BlazeFace)
ROTATIONS = (90, 270, 180)  # rotation retries, degrees counter-clockwise; the best face scoring ...
ROTATE_MIN_SCORE = 0.7  # ... 0.7 or more (faceless frames turned sideways scored up to 0.67) is kept
WEAK_SCORE = 0.65  # a best face scoring less is also tried upside down (the upright copy scores higher)
SIDEWAYS = 50  # degrees the eyes-to-mouth line is off vertical for a face to count as lying sideways


@dataclass(frozen=True)
class Detection:
    """One face: ``box`` (x, y, w, h) in pixels of the original image, possibly reaching past its edges;
    ``score`` in [0, 1] (0: no face was found and this is the whole image, ``no_face="whole"``);
    ``landmarks`` ((x, y), ...) in pixels when the detector gives them (BlazeFace: right eye, left eye, nose
    tip, mouth, right ear, left ear; "right" is the person's right); ``rotation`` (0, 90, 180, 270): degrees
    counter-clockwise the box's content must turn to be upright (the face was found on a rotated copy)."""

    box: Box
    score: float
    landmarks: tuple[Point, ...] | None = None
    rotation: int = 0

    def clipped_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The box rounded to whole pixels and clipped to a ``width`` x ``height`` image."""
        x, y, w, h = self.box
        x0, y0 = max(0, round(x)), max(0, round(y))
        x1, y1 = min(width, round(x + w)), min(height, round(y + h))
        return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


@dataclass(frozen=True)
class View:
    """A transformed copy of an image for a retry: turned ``rotation`` degrees counter-clockwise (np.rot90),
    then padded by ``pad`` (x, y) pixels on each side; :meth:`to_original` maps detections back."""

    rotation: int
    pad: tuple[int, int]
    shape: tuple[int, int]  # (H, W) of the original image

    def apply(self, image: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(np.rot90(image, self.rotation // 90))
        px, py = self.pad
        return cv2.copyMakeBorder(out, py, py, px, px, PAD_MODE) if px or py else out

    def point_to_original(self, x: float, y: float) -> Point:
        x, y = x - self.pad[0], y - self.pad[1]
        height, width = self.shape
        if self.rotation == 90:  # rot90 once: (x, y) of the copy came from (W - y, x)
            return width - y, x
        if self.rotation == 180:
            return width - x, height - y
        if self.rotation == 270:
            return y, height - x
        return x, y

    def to_original(self, detection: Detection) -> Detection:
        x, y, w, h = detection.box
        corners = [self.point_to_original(px, py) for px, py in ((x, y), (x + w, y + h))]
        (x0, x1), (y0, y1) = (sorted(c) for c in zip(*corners))
        landmarks = None
        if detection.landmarks is not None:
            landmarks = tuple(self.point_to_original(px, py) for px, py in detection.landmarks)
        rotation = (detection.rotation + self.rotation) % 360
        return replace(detection, box=(x0, y0, x1 - x0, y1 - y0), landmarks=landmarks, rotation=rotation)


def padded_view(height: int, width: int, fraction: float, rotation: int = 0) -> View:
    return View(rotation, (round(width * fraction), round(height * fraction)), (height, width))


def turns_to_upright(detection: Detection) -> int:
    """Quarter turns (np.rot90) that bring the face upright, from its landmarks: the eyes-to-mouth line
    points down in an upright face; 0 unless it is off by more than :data:`SIDEWAYS` degrees (BlazeFace's
    landmarks lean towards upright on a face lying sideways, and say nothing of a face upside down)."""
    if not detection.landmarks or len(detection.landmarks) < 4:
        return 0
    (rx, ry), (lx, ly), _, (mx, my) = detection.landmarks[:4]
    off = (math.degrees(math.atan2(my - (ry + ly) / 2, mx - (rx + lx) / 2)) - 90 + 180) % 360 - 180
    return round(off / 90) % 4 if abs(off) > SIDEWAYS else 0


def check_retries(retry: str | Sequence[str] | None) -> tuple[str, ...]:
    """``retry`` as a tuple of :data:`RETRIES` names: "pad,rotate", ("pad",), "none" or None (no retries)."""
    if retry is None or retry == "none":
        return ()
    names = tuple(r.strip() for r in retry.split(",")) if isinstance(retry, str) else tuple(retry)
    unknown = [r for r in names if r not in RETRIES]
    if unknown:
        raise ValueError(f"unknown detection retry {unknown[0]!r} (choose from {', '.join(RETRIES)} or none)")
    return names


class FaceDetector(ABC):
    """Finds faces in an RGB uint8 image (H, W, 3): subclasses implement one pass, :meth:`find`.

    ``retry``: what :meth:`detect` tries when a pass finds nothing ("pad", "rotate", both (default) or
    "none"); ``no_face``: "skip" (default; no face, no result) or "whole" (the whole image, score 0).
    """

    name: str = "detector"

    def __init__(self, retry: str | Sequence[str] | None = RETRIES, no_face: str = "skip") -> None:
        if no_face not in NO_FACE_RULES:
            raise ValueError(f"no_face must be one of {', '.join(NO_FACE_RULES)}, got {no_face!r}")
        self.retries, self.no_face = check_retries(retry), no_face

    @abstractmethod
    def find(self, image: np.ndarray) -> list[Detection]:
        """One detection pass over ``image``: faces best first, [] when there is none."""

    def find_again(self, image: np.ndarray, min_score: float) -> list[Detection]:
        """The pass run on retry copies, keeping faces scoring ``min_score`` or more (by default :meth:`find`,
        filtered)."""
        return [d for d in self.find(image) if d.score >= min_score]

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in ``image``, best first, upright (see :attr:`Detection.rotation`), after the retries and the
        no-face rule; [] when there is none."""
        height, width = image.shape[:2]
        min_score = getattr(self, "min_score", 0.0)
        found = self.find(image)
        if not found and "pad" in self.retries and max(height, width) <= PAD_MAX_SIDE:
            for fraction in PAD_FRACTIONS:
                found = self.find_on(image, padded_view(height, width, fraction), min_score - PAD_SCORE_MARGIN)
                if found:
                    break
        if found and "rotate" in self.retries:
            found = self.orient(image, found)
        elif "rotate" in self.retries:
            views = [View(rotation, (0, 0), (height, width)) for rotation in ROTATIONS]
            tries = [self.find_on(image, view, max(min_score, ROTATE_MIN_SCORE)) for view in views]
            found = max(tries, key=lambda t: t[0].score if t else 0.0)
        if not found and self.no_face == "whole":
            found = [Detection((0.0, 0.0, float(width), float(height)), 0.0)]
        return found

    def find_on(self, image: np.ndarray, view: View, min_score: float | None = None) -> list[Detection]:
        """One :meth:`find_again` pass on a transformed copy, keeping faces scoring ``min_score`` or more
        (default: the detector's own), mapped back to ``image``."""
        min_score = getattr(self, "min_score", 0.0) if min_score is None else min_score
        return [view.to_original(d) for d in self.find_again(view.apply(image), min_score)]

    def orient(self, image: np.ndarray, found: list[Detection]) -> list[Detection]:
        """``found`` turned upright: when the best face lies sideways (landmarks), the image is tried turned
        that way and upside down (landmarks can mistake one for the other); when it scores below
        :data:`WEAK_SCORE`, upside down. The turned copy that scores highest, and higher, is taken."""
        best = found[0]
        sideways = turns_to_upright(best)
        turns = [sideways, 2] if sideways else [2] if best.score < WEAK_SCORE else []
        height, width = image.shape[:2]
        views = [View(t * 90, (0, 0), (height, width)) for t in dict.fromkeys(turns)]
        if views and "pad" in self.retries and max(height, width) <= PAD_MAX_SIDE:  # a face crop: needs a border
            pads = [padded_view(*np.rot90(image, v.rotation // 90).shape[:2], PAD_FRACTIONS[0]).pad for v in views]
            views += [View(v.rotation, pad, (height, width)) for v, pad in zip(views, pads)]
        again = max((self.find_on(image, view) for view in views), key=lambda t: t[0].score if t else 0.0, default=[])
        return again if again and again[0].score > best.score else found

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
    return DETECTORS.names()


def create_detector(name: str, **options) -> FaceDetector:
    """A detector by name (see :data:`DETECTORS`); ``options`` go to its constructor."""
    return DETECTORS.get(name)(**options)
