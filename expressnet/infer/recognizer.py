"""``Recognizer``: faces and their emotions in photos, frames and videos.

    from expressnet import Recognizer
    r = Recognizer()                       # shipped model, BlazeFace full range, min score 0.5, presence check
    faces = r.predict("photo.jpg")         # [Face(box=(x, y, w, h), score, emotion, probabilities), ...]
    r = Recognizer(geometry=True)          # + head pose, gaze, eye and mouth openness (docs/geometry.md)
    face = r.predict("photo.jpg")[0]; face.pose.yaw, face.gaze.pitch, face.eye_openness, face.looking_at_camera
    faces = r.predict(cv2.imread(p), color="bgr")   # arrays say their channel order (OpenCV: "bgr")
    for frame in r.predict_video("clip.mp4", every=2, smooth=0.5):
        print(frame.frame, frame.time_s, [f.emotion for f in frame.faces])

Every detection is confirmed by MediaPipe's face landmark model (its face-presence score, ``confirm=True``, the
default for a named detector): faceless frames give no faces (docs/geometry.md). ``geometry=True`` adds the face
geometry stage (head pose, gaze, eye and mouth openness, looking at the camera: geometry on the 468-point face
mesh and the iris model, not learned); it is off by default because of its cost.

The classifier's input (size, channels, interpolation, crop rule) comes from the model's metadata, so
inference prepares faces exactly as training did. The classifier runs on a :class:`~expressnet.runtime.Classifier`
backend: ``backend="auto"`` (default) follows a fixed rule (a shipped model's inference file on the CPU, ONNX
Runtime for the shipped ONNX files, no torch needed; torch on a GPU ``device``), "torch" or "onnx" force one.
``r.provenance()`` names the model, its file's sha256 prefix, the backend and the precision; every output
carries it.

Thread safety: one ``Recognizer`` may be shared by threads (a web server's workers): the detector runs under a
lock (TFLite interpreters are not re-entrant) and the classifier is thread-safe; results equal sequential calls.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from ..data.base import DataError
from ..data.images import to_model_input
from ..faces import Detection, FaceDetector, create_detector, crop_face, detections_from_boxes
from ..faces.confirm import ConfirmedDetector
from ..faces.geometry import FaceGeometry, Gaze, HeadPose, face_geometry
from ..faces.landmarks import FaceLandmarker, FaceMesh
from ..runtime import Classifier, load_classifier
from .sources import VideoFrame, load_rgb
from .stream import BATCH_SIZE, PreparedImage, StreamOptions, StreamResult, frame_results, stream, video_results
from .tracking import BlinkEvent, FaceTracks, IoUTracker

ImageInput = str | Path | Image.Image | np.ndarray
Boxes = Sequence[Sequence[float]]


@dataclass
class Face:
    """One face: ``box`` (x, y, w, h) in pixels clipped to the image, detector ``score``, top ``emotion`` and
    ``probabilities`` (class name -> probability, summing to 1); ``landmarks`` (BlazeFace's six keypoints: eyes,
    nose tip, mouth, ear tragions, as x, y pixels); ``track_id`` in videos; with ``Recognizer(geometry=True)``,
    ``geometry`` (:class:`~expressnet.faces.geometry.FaceGeometry`: head pose, gaze, eye and mouth openness,
    looking at the camera; None when it is off or the landmarks gave no pose) and, with ``mesh=True``, ``mesh``
    (the 468 face-mesh points (468, 3), x, y, z in image pixels). :meth:`to_dict` is the one face schema of the
    API and of ``predict --json`` (docs/predict.md). Equality ignores ``geometry`` and ``mesh``."""

    box: tuple[int, int, int, int]
    score: float
    emotion: str
    probabilities: dict[str, float]
    landmarks: tuple[tuple[float, float], ...] | None = None
    track_id: int | None = None
    geometry: FaceGeometry | None = field(default=None, compare=False)
    mesh: np.ndarray | None = field(default=None, repr=False, compare=False)
    blink: BlinkEvent | None = field(default=None, compare=False)  # videos: the blink this face's track just ended

    def to_dict(self) -> dict[str, Any]:
        """The face as JSON: ``box``, ``score`` (4 decimals), ``emotion``, ``probabilities`` (6 decimals),
        ``track_id`` (None outside videos), ``landmarks`` (2 decimals) when the detector gives them; with
        geometry, ``pose`` {yaw, pitch, roll}, ``gaze`` {yaw, pitch} (degrees, 2 decimals), ``eyes``
        {openness_right, openness_left}, ``mouth_openness`` (4 decimals), ``looking_at_camera``, and ``mesh``
        ([x, y, z] per point, 2 decimals) when kept."""
        d: dict[str, Any] = {
            "box": [int(v) for v in self.box],
            "score": round(float(self.score), 4),
            "emotion": self.emotion,
            "probabilities": {c: round(float(p), 6) for c, p in self.probabilities.items()},
            "track_id": self.track_id,
        }
        if self.landmarks is not None:
            d["landmarks"] = [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]
        if self.geometry is not None:
            g = self.geometry.to_dict()
            right, left = g["eye_openness"]
            d["pose"] = g["pose"]
            d["gaze"] = None if g["gaze"] is None else {"yaw": g["gaze"]["yaw"], "pitch": g["gaze"]["pitch"]}
            d["eyes"] = {"openness_right": right, "openness_left": left}
            d["mouth_openness"] = g["mouth_openness"]
            d["looking_at_camera"] = g["looking_at_camera"]
        if self.mesh is not None:
            d["mesh"] = np.round(np.asarray(self.mesh, dtype=np.float64), 2).tolist()
        if self.blink is not None:
            d["blink"] = self.blink.to_dict()
        return d

    @property
    def runner_up(self) -> tuple[str, float]:
        """The second most likely emotion and its probability."""
        ranked = sorted(self.probabilities.items(), key=lambda kv: -kv[1])
        return ranked[1] if len(ranked) > 1 else ("", 0.0)

    @property
    def pose(self) -> HeadPose | None:
        """Head pose: ``yaw``, ``pitch``, ``roll`` in degrees (None without geometry)."""
        return None if self.geometry is None else self.geometry.pose

    @property
    def gaze(self) -> Gaze | None:
        """Gaze direction in the camera's frame: ``yaw``, ``pitch`` in degrees (None without geometry)."""
        return None if self.geometry is None else self.geometry.gaze

    @property
    def eye_openness(self) -> tuple[float, float] | None:
        """Lid gap over eye width of (the person's right eye, their left eye); open about 0.2-0.35."""
        return None if self.geometry is None else self.geometry.eye_openness

    @property
    def mouth_openness(self) -> float | None:
        """Inner-lip gap over mouth width: 0 closed."""
        return None if self.geometry is None else self.geometry.mouth_openness

    @property
    def looking_at_camera(self) -> bool | None:
        """Gaze within 10 degrees of the camera, yaw within 45 and an eye open (docs/geometry.md)."""
        return None if self.geometry is None else self.geometry.looking_at_camera


@dataclass
class FrameResult:
    """The faces of one processed video frame; ``image`` is the RGB frame (kept for drawing)."""

    frame: int
    time_s: float
    faces: list[Face]
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"frame": self.frame, "time_s": self.time_s, "faces": [f.to_dict() for f in self.faces]}


class Recognizer:
    """Detects faces and classifies their expression.

    ``model``: a shipped model name, a checkpoint or ``.onnx`` path (None: the default shipped model), a loaded
    ExpressNet module or a :class:`~expressnet.runtime.Classifier`. ``backend``: "auto" (a fixed rule: a shipped
    model's inference file on the CPU, torch on a GPU ``device``; see :func:`expressnet.runtime.auto_backend`),
    "torch" or "onnx". ``detector``: "blazeface" (default), "haar", "none" (images are face
    crops) or a :class:`FaceDetector`; ``detector_options`` go to its constructor (BlazeFace: ``model``,
    ``min_score``, ``tiles`` ("auto": tiles from the image size), ``retry`` (padded / rotated retries when
    nothing is found), ``no_face`` ("whole": classify the whole image), ``threads``). ``confirm``: keep only
    the detections the face landmark model scores as faces (presence >= 0.5; every retry too), wrapping the
    detector in :class:`~expressnet.faces.confirm.ConfirmedDetector`; None (default) confirms a detector given
    by name other than "none", and leaves a :class:`FaceDetector` passed in as it is. ``geometry``: each face
    gets head pose, gaze, eye and mouth openness and looking-at-camera (:attr:`Face.geometry`; the face and iris
    landmark models, 2 passes, mirrored: about 2.3 times the cost of one face, see docs/geometry.md); ``mesh``:
    keep the 468 face-mesh points too (:attr:`Face.mesh`; implies ``geometry``). ``align`` levels the
    eyes before cropping (needs landmarks: BlazeFace). ``tta_flip`` defaults to what the model was trained
    for. ``device`` and ``precision`` apply to the torch backend (a module passed in is moved to ``device``).
    """

    def __init__(
        self,
        model: Any = None,
        detector: str | FaceDetector = "blazeface",
        *,
        detector_options: dict[str, Any] | None = None,
        align: bool = False,
        tta_flip: bool | None = None,
        precision: str = "fp32",
        batch_size: int = 64,
        device: Any = "cpu",
        backend: str = "auto",
        threads: int | None = None,
        confirm: bool | None = None,
        geometry: bool = False,
        mesh: bool = False,
    ) -> None:
        if isinstance(model, Classifier):
            self.classifier = model
        else:
            self.classifier = load_classifier(
                model,
                backend,
                tta_flip=tta_flip,
                precision=precision,
                batch_size=batch_size,
                device=device,
                threads=threads,
            )
        self.geometry, self.mesh = bool(geometry or mesh), bool(mesh)
        self.landmark_threads = (detector_options or {}).get("threads", threads)
        self._landmarker: FaceLandmarker | None = self.new_landmarker() if self.geometry else None
        self._landmarker_lock = threading.Lock()
        given = isinstance(detector, FaceDetector)
        base = detector if given else create_detector(detector, **(detector_options or {}))
        self.confirm = (not given and detector != "none") if confirm is None else bool(confirm)
        if self.confirm and not isinstance(base, ConfirmedDetector):
            # the geometry's landmarker confirms too: its meshes of the confirmed faces are reused
            self.detector: FaceDetector = ConfirmedDetector(base, self._landmarker or self.new_landmarker(fast=True))
        else:
            self.detector = base
        self._detect_lock = threading.Lock()
        self.class_names: tuple[str, ...] = self.classifier.class_names
        self.preprocessing = self.classifier.preprocessing
        self.align = align

    def new_landmarker(self, fast: bool = False) -> FaceLandmarker:
        """The face geometry's landmarker (face and iris models, 2 passes, mirrored), or ``fast``: the face model
        alone, one pass (the presence check's)."""
        if fast:
            return FaceLandmarker(iris=False, passes=1, mirror=False, threads=self.landmark_threads)
        return FaceLandmarker(threads=self.landmark_threads)

    @property
    def landmarker(self) -> FaceLandmarker:
        """The geometry's landmarker, loaded on first use when the recognizer was made without ``geometry``."""
        with self._landmarker_lock:
            if self._landmarker is None:
                self._landmarker = self.new_landmarker()
            return self._landmarker

    @property
    def model(self) -> Any:
        """The torch module behind the classifier (torch backend only; research use)."""
        if not hasattr(self.classifier, "module"):
            raise AttributeError(f"the {self.classifier.backend} backend has no torch module; use backend='torch'")
        return self.classifier.module

    def provenance(self) -> dict[str, Any]:
        """The model, its file's sha256 prefix, backend and precision: what every output names."""
        return self.classifier.provenance()

    @property
    def tta_flip(self) -> bool:
        return self.classifier.tta_flip

    def __repr__(self) -> str:
        return (
            f"Recognizer(model={self.classifier.name!r}, backend={self.classifier.backend!r}, "
            f"precision={self.classifier.precision!r}, classes={self.class_names}, detector={self.detector!r}, "
            f"align={self.align}, geometry={self.geometry})"
        )

    def detect(self, rgb: np.ndarray, boxes: Boxes | None = None) -> list[Detection]:
        """The detector's faces in an RGB image, or ``boxes`` (x, y, w, h) given by the caller."""
        if boxes is not None:
            return detections_from_boxes(boxes)
        with self._detect_lock:
            return self.detector.detect(rgb)

    def crops(self, rgb_images: Sequence[np.ndarray], detections: Sequence[Sequence[Detection]]) -> np.ndarray:
        """Model inputs (N, C, S, S) uint8 of every detection of every image, in order."""
        pre = self.preprocessing
        crops = [
            to_model_input(
                crop_face(rgb, d, pre.face_crop, self.align), pre.input_size, pre.channels, pre.interpolation
            )
            for rgb, found in zip(rgb_images, detections)
            for d in found
        ]
        if not crops:
            return np.zeros((0, pre.channels, pre.input_size, pre.input_size), dtype=np.uint8)
        return np.stack(crops)

    def classify(self, rgb_images: Sequence[np.ndarray], detections: Sequence[Sequence[Detection]]) -> np.ndarray:
        """Class probabilities (N, K) of every detection of every image, in order, in one classifier batch."""
        return self.classifier.probabilities(self.crops(rgb_images, detections))

    def meshes(self, rgb: np.ndarray, detections: Sequence[Detection]) -> list[FaceMesh]:
        """Face meshes with eyes of ``detections`` of ``rgb`` for :meth:`make_face`'s geometry. Called right after
        :meth:`detect` of the same image array on the same thread, it reuses the presence check's meshes."""
        if not detections:
            return []
        if isinstance(self.detector, ConfirmedDetector) and self.detector.landmarker is self._landmarker:
            return self.detector.meshes(rgb, detections)
        return self.landmarker(rgb, detections)

    def make_face(
        self,
        detection: Detection,
        probabilities: np.ndarray,
        rgb: np.ndarray,
        mesh: FaceMesh | None = None,
        keep_mesh: bool | None = None,
    ) -> Face:
        """A :class:`Face` of one detection and its class probabilities; with its ``mesh`` (:meth:`meshes`), its
        geometry too, and the mesh's points when ``keep_mesh`` (default: the recognizer's ``mesh``)."""
        height, width = rgb.shape[:2]
        geometry = None
        if mesh is not None:
            try:
                geometry = face_geometry(mesh, width, height)
            except ValueError:  # solvePnP found no pose (degenerate landmarks)
                geometry = None
        keep = self.mesh if keep_mesh is None else keep_mesh
        return Face(
            box=detection.clipped_box(width, height),
            score=float(detection.score),
            emotion=self.class_names[int(np.argmax(probabilities))],
            probabilities={c: float(p) for c, p in zip(self.class_names, probabilities)},
            landmarks=detection.landmarks,
            geometry=geometry,
            mesh=mesh.points if mesh is not None and keep else None,
        )

    def prepare(
        self, rgb: np.ndarray, keep_image: bool = False, boxes: Boxes | None = None, geometry: bool | None = None
    ) -> PreparedImage:
        """Step one of every prediction, per image (on worker threads in streams): the faces found (or ``boxes``
        given), their face meshes when measuring ``geometry`` (None: the recognizer's setting), and their
        classifier inputs; the image itself only with ``keep_image``."""
        found = self.detect(rgb, boxes)
        meshes = self.meshes(rgb, found) if (self.geometry if geometry is None else geometry) else None
        image = rgb if keep_image else np.empty((*rgb.shape[:2], 0), np.uint8)
        return PreparedImage(image, found, self.crops([rgb], [found]), meshes)

    def finish(self, prepared: Sequence[PreparedImage], keep_mesh: bool | None = None) -> list[list[Face]]:
        """Step two: every face of ``prepared`` classified in one batch, as :class:`Face` lists (one per image, in
        order), with geometry where :meth:`prepare` measured it (``keep_mesh``: see :meth:`make_face`)."""
        crops = [p.crops for p in prepared if len(p.crops)]
        probabilities = iter(self.classifier.probabilities(np.concatenate(crops)) if crops else [])
        return [
            [
                self.make_face(d, next(probabilities), p.image, m, keep_mesh)
                for d, m in zip(p.detections, p.meshes or [None] * len(p.detections))
            ]
            for p in prepared
        ]

    def measures(self, geometry: bool | None = None, mesh: bool | None = None) -> tuple[bool, bool]:
        """(measure the geometry, keep the mesh) for one call: ``geometry`` and ``mesh`` override the recognizer's
        settings (None: its own; ``mesh`` implies ``geometry``)."""
        keep = self.mesh if mesh is None else mesh
        return keep or (self.geometry if geometry is None else geometry), keep

    def predict_rgb(
        self,
        rgb_images: Sequence[np.ndarray],
        boxes: Sequence[Boxes | None] | None = None,
        geometry: bool | None = None,
        mesh: bool | None = None,
    ) -> list[list[Face]]:
        """Faces of decoded RGB images, optionally with given boxes per image (:meth:`prepare` each, then
        :meth:`finish` them together: the steps of every ``predict*`` and of :meth:`stream`). ``geometry`` and
        ``mesh`` override the recognizer's settings for this call (None: its own; ``mesh`` implies ``geometry``)."""
        boxes = [None] * len(rgb_images) if boxes is None else boxes
        measure, keep = self.measures(geometry, mesh)
        return self.finish([self.prepare(rgb, True, b, measure) for rgb, b in zip(rgb_images, boxes)], keep)

    def predict(self, image: ImageInput, boxes: Boxes | None = None, color: str | None = None) -> list[Face]:
        """Faces in one image (a path, PIL image, image bytes or array), best detection first; [] when there is
        none. ``color`` is the channel order of a colour array: "rgb" (PIL, imageio) or "bgr" (OpenCV's
        ``cv2.imread``); a colour array without it is a ``ValueError`` (the order cannot be told from the pixels).
        ``boxes`` (x, y, w, h) skip the detector. Several images: :meth:`predict_batch`."""
        if isinstance(image, (list, tuple)):
            raise TypeError(
                f"predict takes one image, not a {type(image).__name__}; for several images use "
                "predict_batch([...]) (one result list per image)"
            )
        return self.predict_batch([image], None if boxes is None else [boxes], color)[0]

    def predict_batch(
        self,
        images: Sequence[ImageInput],
        boxes: Sequence[Boxes | None] | None = None,
        color: str | None = None,
        return_exceptions: bool = False,
    ) -> list[list[Face] | DataError]:
        """:meth:`predict` for many images, classifying all their faces in one batch. An unreadable image
        raises :class:`DataError` naming it, or with ``return_exceptions`` takes its place in the result while
        the other images are processed."""
        boxes = [None] * len(images) if boxes is None else list(boxes)
        if len(boxes) != len(images):
            raise ValueError(f"{len(images)} images but {len(boxes)} box lists")
        decoded: list[np.ndarray | DataError] = []
        for image in images:
            try:
                decoded.append(load_rgb(image, color))
            except DataError as exc:
                if not return_exceptions:
                    raise
                decoded.append(exc)
        ok = [i for i, d in enumerate(decoded) if not isinstance(d, DataError)]
        faces = iter(self.predict_rgb([decoded[i] for i in ok], [boxes[i] for i in ok]))
        return [d if isinstance(d, DataError) else next(faces) for d in decoded]

    def predict_video(
        self,
        source: str | Path | int,
        every: int = 1,
        smooth: float | None = None,
        max_frames: int | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> Iterator[FrameResult]:
        """Results for every ``every``-th frame (at most ``max_frames``) of a video file or camera index, with a
        track id per face (the streaming pipeline's video path: :func:`~expressnet.infer.stream.video_results`,
        ``batch_size`` frames classified at a time). ``smooth`` (0 < alpha <= 1) smooths each track's
        probabilities exponentially (emotion = argmax of the smoothed ones); with geometry, a face whose track
        ends a blink has ``blink``. Raises :class:`DataError` naming the source if unreadable."""
        options = StreamOptions(every, smooth, max_frames, batch_size, keep_images=True)
        with closing(video_results(self, 0, source, options)) as results:
            for result in results:
                if result.error is not None:
                    raise result.error
                yield FrameResult(result.frame, result.time_s, result.faces, result.image)

    def predict_frames(
        self,
        frames: Iterable[VideoFrame],
        smooth: float | None = None,
        tracker: IoUTracker | None = None,
        *,
        tracks: FaceTracks | None = None,
        batch_size: int = 1,
        geometry: bool | None = None,
        mesh: bool | None = None,
    ) -> Iterator[FrameResult]:
        """:meth:`predict_video` on frames from any source, in order, ``batch_size`` at a time (1: each result as
        soon as its frame came). ``tracks`` carries the video's state (track ids, smoothing, blinks) across calls;
        else one is made with ``smooth`` and ``tracker`` (ids kept across calls). ``geometry`` and ``mesh``
        override the recognizer's settings as in :meth:`predict_rgb` (with geometry, blinks per track)."""
        tracks = tracks or FaceTracks(smooth, tracker)
        measure, keep = self.measures(geometry, mesh)
        steps = SimpleNamespace(
            prepare=partial(self.prepare, geometry=measure), finish=partial(self.finish, keep_mesh=keep)
        )
        for frame, faces, _ in frame_results(steps, frames, tracks, batch_size):
            yield FrameResult(frame.index, frame.time_s, faces, frame.image)

    def stream(self, sources: str | Path | int | Iterable[str | Path], **options: Any) -> Iterator[StreamResult]:
        """Results for every image and processed video frame of ``sources`` (a file, folder, glob, list file,
        camera index, or an iterable of paths), lazily and in order, with memory that stays flat; unreadable
        inputs come out as results with ``error``. ``options``: ``recursive``, ``every``, ``smooth``,
        ``max_frames``, ``batch_size``, ``workers``, ``keep_images``, ``start`` (a committed
        :class:`~expressnet.infer.stream.Position`); see :func:`expressnet.infer.stream.stream`."""
        return stream(self, sources, **options)
