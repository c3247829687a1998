"""No false faces: any detector's faces confirmed by the face landmark model's face-presence score.

:class:`ConfirmedDetector` wraps a detector: every pass it makes (the first and each retry: padded, turned, tiled)
keeps only the faces whose face-landmark crop scores at least ``min_presence`` (0.5, MediaPipe's own threshold,
which the measurements in docs/geometry.md support: false faces on the faceless files score at most 0.15 on the
detection's crop, true faces 0.9 to 1). A face that fails on the detection's crop gets a second look on the crop
taken from its own landmarks (:meth:`FaceLandmarker.face_meshes`). A retry's faces are scored on the retry's copy
of the image (a tight face crop padded with black scores higher there than with its border pixels repeated), so a
retry that turned the image the wrong way (a face found upside down) is dropped too.

The meshes computed while confirming are kept for the last image each thread passed through :meth:`detect`, so
:meth:`ConfirmedDetector.meshes` right after it does not run the face model again.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from .base import Detection, FaceDetector
from .landmarks import MIN_PRESENCE, FaceLandmarker, FaceMesh


class ConfirmedDetector(FaceDetector):
    """``detector``'s faces, each confirmed by ``landmarker``'s face-presence score (>= ``min_presence``).

    Retries and the no-face rule are ``detector``'s own settings, run by this wrapper so that every retry is
    confirmed too (on the retry's padded or turned copy). ``landmarker`` defaults to a face-only
    :class:`FaceLandmarker` (one pass, no iris model); pass the one that computes geometry to share its models and
    reuse the meshes (:meth:`meshes`).
    """

    def __init__(
        self, detector: FaceDetector, landmarker: FaceLandmarker | None = None, min_presence: float = MIN_PRESENCE
    ) -> None:
        if not 0 <= min_presence <= 1:
            raise ValueError(f"min_presence must be in [0, 1], got {min_presence}")
        super().__init__(detector.retries or None, detector.no_face)
        self.detector = detector
        self.landmarker = landmarker if landmarker is not None else FaceLandmarker(iris=False, passes=1, mirror=False)
        self.min_presence = min_presence
        self.name = detector.name
        self.local = threading.local()

    @property
    def min_score(self) -> float:
        return getattr(self.detector, "min_score", 0.0)

    def __repr__(self) -> str:
        return f"ConfirmedDetector({self.detector!r}, min_presence={self.min_presence})"

    def confirm(self, image: np.ndarray, found: Sequence[Detection]) -> list[Detection]:
        """The detections of ``image`` whose crop scores at least ``min_presence``, in order."""
        return [d for d, m in self.scored(image, found) if m.presence >= self.min_presence]

    def scored(self, image: np.ndarray, found: Sequence[Detection]) -> list[tuple[Detection, FaceMesh]]:
        """Each detection with its face mesh (no eyes), presence included, whatever the score."""
        return list(zip(found, self.landmarker.face_meshes(image, found, self.min_presence)))

    def find(self, image: np.ndarray) -> list[Detection]:
        pairs = self.scored(image, self.detector.find(image))
        self.local.image, self.local.meshes = image, {d: m for d, m in pairs}
        return [d for d, m in pairs if m.presence >= self.min_presence]

    def find_again(self, image: np.ndarray, min_score: float) -> list[Detection]:
        return self.confirm(image, self.detector.find_again(image, min_score))

    def meshes(self, image: np.ndarray, detections: Sequence[Detection]) -> list[FaceMesh]:
        """Face meshes (with eyes when the landmarker has the iris model) of ``detections`` of ``image``,
        reusing those computed by the last :meth:`detect` of this thread on this very image array."""
        known = self.local.meshes if getattr(self.local, "image", None) is image else {}
        missing = [d for d in detections if d not in known]
        known = {**known, **dict(zip(missing, self.landmarker.face_meshes(image, missing, self.min_presence)))}
        return self.landmarker.add_eyes(image, [known[d] for d in detections])
