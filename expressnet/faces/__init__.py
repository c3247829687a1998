"""Face detection behind one interface (BlazeFace, Haar, none, user boxes) and the crop the classifier sees."""

from .base import DETECTORS, Detection, FaceDetector, create_detector, detections_from_boxes, list_detectors
from .crop import CROP_MARGINS, crop_face, expand_box

__all__ = [
    "CROP_MARGINS",
    "DETECTORS",
    "Detection",
    "FaceDetector",
    "create_detector",
    "crop_face",
    "detections_from_boxes",
    "expand_box",
    "list_detectors",
]
