"""Head pose, gaze, eye and mouth openness, and looking-at-camera from a face mesh: geometry, not learned.

Nothing here was learned; two constants, where the iris rests in the eye, were measured on photos of people
looking at the camera (:data:`EYE_TEMPORAL_REST`, :data:`EYE_UPWARD_REST`). Head pose is the rigid rotation that
best maps MediaPipe's canonical face model onto the landmarks through a pinhole camera (OpenCV ``solvePnP``); gaze
is the iris's offset from its rest in the eye turned into an eyeball rotation with anatomical constants, then
added to the head's rotation; openness is a ratio of landmark distances. docs/geometry.md states the rules, the
constants and what they assume.

Camera: a pinhole with square pixels, principal point at the image centre and focal length ``max(W, H)``
pixels (a horizontal field of view of about 53 degrees for a 4:3 landscape frame) unless given.

Camera axes (OpenCV): x to the image's right, y down, z forward (away from the camera). Head axes: x towards
the person's left, y down their face, z from their face backwards; a person facing the camera straight has the
identity rotation. Angles, in degrees, with ``R = Rz(roll) @ Ry(-yaw) @ Rx(-pitch)`` (head to camera):

* yaw > 0: the person turns to their own left (their nose points towards the image's right);
* pitch > 0: the person looks up;
* roll > 0: the head tilts towards the person's left shoulder (their eye line turns clockwise on screen).

Roll is the outermost rotation, about the camera's axis, so turning the image in its plane changes roll alone,
and mirroring the image negates yaw and roll and keeps pitch. Gaze angles follow the same signs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .canonical_face import CANONICAL_VERTICES
from .landmarks import EYE_CONTOUR_MESH, Eye, FaceMesh

# MediaPipe's rigid landmark basis (face_geometry's procrustes_landmark_basis): forehead, nose, eye corners,
# cheekbones and jaw angle, the points that move least with expression
POSE_LANDMARKS = (4, 6, 10, 33, 54, 67, 117, 119, 121, 127, 129, 132, 133, 136, 143, 147, 198, 205, 263, 284,
                  297, 346, 348, 350, 356, 358, 361, 362, 365, 372, 376, 420, 425)  # fmt: skip
HEAD_AXES = np.array([1.0, -1.0, -1.0])  # canonical model (x left, y up, z out of the face) -> head axes

# eye contour (71 iris-model points, or the 16 face-mesh points of EYE_CONTOUR_MESH): 0 and 8 the corners,
# 1..7 the lower lid and 9..15 the upper lid, both from the outer corner; openness uses the middle five pairs
OUTER, INNER = 0, 8
LID_PAIRS = ((2, 10), (3, 11), (4, 12), (5, 13), (6, 14))
MOUTH_CORNERS = (61, 291)  # outer mouth corners (the person's right, left)
LIP_PAIRS = ((82, 87), (13, 14), (312, 317))  # inner upper lip, inner lower lip

EYE_HALF_WIDTH_MM = 15.0  # half the palpebral fissure (corner to corner ~30 mm in adults) ...
EYEBALL_RADIUS_MM = 12.0  # ... and the eyeball's radius: an iris offset of h half-widths is asin(h * 15 / 12)
# where the iris centre rests when the eye looks straight ahead, in half eye widths from the corners' midpoint:
# 0.1 towards the temple and 0.1 up (the inner corner reaches further from the iris than the outer one, and both
# sit a little low); medians over 48 faces looking roughly at the camera (docs/geometry.md)
EYE_TEMPORAL_REST = 0.1
EYE_UPWARD_REST = 0.1

LOOK_MAX_DEGREES = 10.0  # looking at the camera: gaze within 10 degrees of the direction to the camera ...
LOOK_MAX_YAW = 45.0  # ... with the head turned at most 45 degrees (the far eye's iris is unreliable beyond) ...
EYES_CLOSED = 0.1  # ... and the eyes open: openness (lid gap / eye width) below this is closed


@dataclass(frozen=True, eq=False)
class HeadPose:
    """``yaw``, ``pitch``, ``roll`` in degrees (see the module's conventions); ``rotation`` (3, 3) head to camera
    axes; ``translation`` (3,) the canonical model's origin in camera axes, in centimetres (its z: the distance,
    right only as far as the focal length and the model's size are)."""

    yaw: float
    pitch: float
    roll: float
    rotation: np.ndarray
    translation: np.ndarray


@dataclass(frozen=True)
class Gaze:
    """Gaze direction in the camera's frame: ``yaw`` and ``pitch`` in degrees (head pose plus eye rotation;
    signs as head pose: yaw > 0 towards the person's left, pitch > 0 up), per eye and for both together
    (the mean direction of the open eyes); ``eye_yaw``/``eye_pitch``: the eyes' own rotation in the head."""

    yaw: float
    pitch: float
    right: tuple[float, float]
    left: tuple[float, float]
    eye_yaw: float
    eye_pitch: float


@dataclass(frozen=True)
class FaceGeometry:
    """Everything :func:`face_geometry` measures on one face; ``eye_openness`` is (the person's right eye, their
    left eye); ``camera_angle``: degrees between the gaze (the head's direction when there are no eyes) and the
    direction from the face to the camera."""

    pose: HeadPose
    gaze: Gaze | None
    eye_openness: tuple[float, float]
    mouth_openness: float
    looking_at_camera: bool
    camera_angle: float  # degrees between the gaze (the head's direction without eyes) and the way to the camera

    def to_dict(self) -> dict[str, Any]:
        """JSON: angles in degrees (2 decimals), openness (4 decimals); ``gaze`` is None without eyes."""
        gaze = None
        if self.gaze is not None:
            g = self.gaze
            gaze = {
                "yaw": deg(g.yaw),
                "pitch": deg(g.pitch),
                "right": [*map(deg, g.right)],
                "left": [*map(deg, g.left)],
            }
        return {
            "pose": {"yaw": deg(self.pose.yaw), "pitch": deg(self.pose.pitch), "roll": deg(self.pose.roll)},
            "gaze": gaze,
            "eye_openness": [round(float(v), 4) for v in self.eye_openness],
            "mouth_openness": round(float(self.mouth_openness), 4),
            "looking_at_camera": self.looking_at_camera,
            "camera_angle": deg(self.camera_angle),
        }


def deg(value: float) -> float:
    return round(float(value), 2)


def camera_matrix(width: int, height: int, focal: float | None = None) -> np.ndarray:
    """The pinhole camera assumed: focal length ``focal`` (default ``max(width, height)``) pixels, principal
    point at the image centre."""
    f = float(max(width, height) if focal is None else focal)
    return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head-to-camera rotation for angles in degrees: ``Rz(roll) @ Ry(-yaw) @ Rx(-pitch)``."""
    y, p, r = (math.radians(v) for v in (-yaw, -pitch, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def euler_angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a head-to-camera rotation (inverse of :func:`rotation_matrix`)."""
    r = np.asarray(rotation, dtype=np.float64)
    yaw = -math.degrees(math.asin(float(np.clip(-r[2, 0], -1.0, 1.0))))
    pitch = -math.degrees(math.atan2(r[2, 1], r[2, 2]))
    roll = math.degrees(math.atan2(r[1, 0], r[0, 0]))
    return yaw, pitch, roll


def model_points(indices: Sequence[int] = POSE_LANDMARKS) -> np.ndarray:
    """Canonical-model vertices (N, 3) in head axes, centimetres."""
    return np.array([CANONICAL_VERTICES[i] for i in indices]) * HEAD_AXES


def head_pose(
    points: np.ndarray, width: int, height: int, focal: float | None = None, indices: Sequence[int] = POSE_LANDMARKS
) -> HeadPose:
    """Head pose from face-mesh ``points`` (468, 2+) in pixels of a ``width`` x ``height`` image: the rotation and
    translation that project the canonical model's ``indices`` vertices onto those landmarks with least squared
    error (SQPnP's global solution, refined by Levenberg-Marquardt)."""
    objects = model_points(indices)
    image = np.ascontiguousarray(np.asarray(points, dtype=np.float64)[list(indices), :2])
    camera = camera_matrix(width, height, focal)
    ok, rvec, tvec = cv2.solvePnP(objects, image, camera, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        raise ValueError("solvePnP found no head pose for these landmarks")
    rvec, tvec = cv2.solvePnPRefineLM(objects, image, camera, None, rvec, tvec)
    rotation = cv2.Rodrigues(rvec)[0]
    yaw, pitch, roll = euler_angles(rotation)
    return HeadPose(yaw, pitch, roll, rotation, tvec.reshape(3))


def corners_and_lids(contour: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image-left corner, image-right corner (of an upright face) and the (16, 2) eye-contour points."""
    c = np.asarray(contour, dtype=np.float64)[:16, :2]
    return c[OUTER], c[INNER], c


def eye_openness(contour: np.ndarray) -> float:
    """Lid gap over eye width: the mean distance of five upper-lid points from the lower-lid points below them,
    across the eye, over the corner-to-corner distance (about 0.25-0.35 open, under 0.1 closed). ``contour``:
    an :class:`Eye`'s contour or the 16 mesh points of :data:`EYE_CONTOUR_MESH`, in that order."""
    c = np.asarray(contour, dtype=np.float64)[:16, :2]
    axis = c[INNER] - c[OUTER]
    width = float(np.hypot(*axis))
    if width <= 0:
        return 0.0
    normal = np.array([-axis[1], axis[0]]) / width
    gaps = [abs(float((c[upper] - c[lower]) @ normal)) for lower, upper in LID_PAIRS]
    return float(np.mean(gaps)) / width


def mouth_openness(points: np.ndarray) -> float:
    """Inner-lip gap over mouth width: the mean distance between three pairs of inner-lip points (middle and
    either side) over the distance between the mouth corners (0 closed, about 0.3 wide open in speech)."""
    p = np.asarray(points, dtype=np.float64)[:, :2]
    width = float(np.hypot(*(p[MOUTH_CORNERS[1]] - p[MOUTH_CORNERS[0]])))
    if width <= 0:
        return 0.0
    return float(np.mean([np.hypot(*(p[a] - p[b])) for a, b in LIP_PAIRS])) / width


def eye_rotation(eye: Eye, left: bool) -> tuple[float, float]:
    """The eye's rotation in the head (yaw, pitch) in degrees, from its iris centre's offset from where it rests
    (:data:`EYE_TEMPORAL_REST`, :data:`EYE_UPWARD_REST` from the midpoint of the corners), in half eye widths
    along and across the corner line: an offset of h half-widths is an eyeball turned by
    asin(h * EYE_HALF_WIDTH_MM / EYEBALL_RADIUS_MM). ``left``: the person's left eye (its contour runs from the
    image's right)."""
    c = np.asarray(eye.contour, dtype=np.float64)[:16, :2]
    a, b = (c[INNER], c[OUTER]) if left else (c[OUTER], c[INNER])  # image-left corner, image-right corner
    axis = b - a
    half = float(np.hypot(*axis)) / 2
    if half <= 0:
        return 0.0, 0.0
    ex = axis / (2 * half)
    ey = np.array([-ex[1], ex[0]])
    offset = np.asarray(eye.iris[0, :2], dtype=np.float64) - (a + b) / 2
    temple = 1.0 if left else -1.0  # the temple's side along ex: the image's right for the left eye
    h = float(offset @ ex) / half - temple * EYE_TEMPORAL_REST
    v = float(offset @ ey) / half + EYE_UPWARD_REST
    k = EYE_HALF_WIDTH_MM / EYEBALL_RADIUS_MM
    yaw = math.degrees(math.asin(float(np.clip(h * k, -1.0, 1.0))))
    pitch = -math.degrees(math.asin(float(np.clip(v * k, -1.0, 1.0))))
    return yaw, pitch


def direction(yaw: float, pitch: float) -> np.ndarray:
    """Unit vector (head or camera axes) looking towards ``yaw``, ``pitch`` degrees; (0, 0) is -z."""
    y, p = math.radians(yaw), math.radians(pitch)
    return np.array([math.sin(y) * math.cos(p), -math.sin(p), -math.cos(y) * math.cos(p)])


def angles(vector: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees of a direction (inverse of :func:`direction`)."""
    x, y, z = (float(v) for v in vector)
    return math.degrees(math.atan2(x, -z)), math.degrees(math.atan2(-y, math.hypot(x, z)))


def gaze(pose: HeadPose, eyes: tuple[Eye, Eye], openness: tuple[float, float] | None = None) -> Gaze:
    """Gaze in the camera's frame: each eye's rotation in the head (:func:`eye_rotation`) turned by the head
    pose; both eyes together: the mean direction of the open eyes (both when neither or both are open)."""
    rotations = [eye_rotation(eye, left) for eye, left in zip(eyes, (False, True))]
    in_camera = [pose.rotation @ direction(*r) for r in rotations]
    open_eyes = [True, True] if openness is None else [o >= EYES_CLOSED for o in openness]
    use = [i for i in (0, 1) if open_eyes[i]] or [0, 1]
    mean = np.mean([in_camera[i] for i in use], axis=0)
    eye_mean = np.mean([direction(*rotations[i]) for i in use], axis=0)
    return Gaze(*angles(mean), angles(in_camera[0]), angles(in_camera[1]), *angles(eye_mean))


def face_geometry(mesh: FaceMesh, width: int, height: int, focal: float | None = None) -> FaceGeometry:
    """Head pose, gaze (when ``mesh`` has eyes), eye and mouth openness and looking-at-camera of one face mesh
    from a ``width`` x ``height`` image.

    Looking at the camera: the eyes' mean gaze is within :data:`LOOK_MAX_DEGREES` of the direction from the face
    to the camera (``-translation``: a face off the image centre must look sideways to look at the camera), the
    head's yaw is within :data:`LOOK_MAX_YAW` and at least one eye is open (openness >= :data:`EYES_CLOSED`).
    Without eyes (no iris model), gaze and looking-at-camera use the head pose alone."""
    pose = head_pose(mesh.points, width, height, focal)
    if mesh.eyes is not None:
        openness = tuple(eye_openness(e.contour) for e in mesh.eyes)
        eye_gaze = gaze(pose, mesh.eyes, openness)
        looking = direction(eye_gaze.yaw, eye_gaze.pitch)
    else:
        openness = tuple(eye_openness(mesh.points[list(EYE_CONTOUR_MESH[s])]) for s in ("right", "left"))
        eye_gaze = None
        looking = pose.rotation @ direction(0.0, 0.0)
    to_camera = -pose.translation / max(float(np.linalg.norm(pose.translation)), 1e-9)
    angle = math.degrees(math.acos(float(np.clip(looking @ to_camera, -1.0, 1.0))))
    at_camera = angle <= LOOK_MAX_DEGREES and abs(pose.yaw) <= LOOK_MAX_YAW and max(openness) >= EYES_CLOSED
    return FaceGeometry(pose, eye_gaze, openness, mouth_openness(mesh.points), bool(at_camera), angle)
