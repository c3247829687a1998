"""Recognizer: inputs of every kind, robustness to odd and broken images, batching, user boxes, video
tracking and smoothing, the face schema, the presence check (on by default) and the face geometry (opt-in).
The shipped default model on its inference file (no torch needed; label quality is not tested here); a tiny
untrained torch model where a test needs torch."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import real_data
from PIL import Image

import expressnet
from expressnet import Recognizer
from expressnet.data import DataError, Preprocessing
from expressnet.data.images import array_to_rgb, read_image
from expressnet.data.labels import FER2013_CLASSES
from expressnet.faces import create_detector
from expressnet.faces.confirm import ConfirmedDetector
from expressnet.infer.outputs import GEOMETRY_COLUMNS, RowSink, columns, flat_rows, frame_result
from expressnet.infer.smoothing import ProbabilitySmoother, flicker_rate, label_changes
from expressnet.infer.sources import VideoFrame, VideoSource
from expressnet.infer.tracking import IoUTracker

ASTRONAUT = Path(__file__).resolve().parents[1] / "expressnet" / "assets" / "astronaut.jpg"
FACE_CENTRE = (227, 122)  # of the astronaut's face in the 512x512 photo (BlazeFace box centre, +-10 px)


def tiny_model(channels: int = 1):
    """An untrained tiny ExpressNet with the attributes a loaded checkpoint has (needs torch)."""
    torch = pytest.importorskip("torch", reason="a torch model: the torch extra")
    torch.manual_seed(0)
    model = expressnet.create_model("tiny", num_classes=7, in_channels=channels).eval()
    model.class_names = FER2013_CLASSES
    model.preprocessing = Preprocessing(48, channels)
    model.metadata = {"tta_flip": True}
    return model


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    """The default model on its inference file (ONNX Runtime: no torch)."""
    return Recognizer(detector_options={"threads": 1})


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return read_image(ASTRONAUT)


def assert_one_astronaut_face(faces, scale: float = 1.0, name: str = "") -> None:
    """One face, where the astronaut's face is in the upright photo (scaled by ``scale``)."""
    assert len(faces) == 1, name
    x, y, w, h = faces[0].box
    cx, cy = x + w / 2, y + h / 2
    assert abs(cx - FACE_CENTRE[0] * scale) < 15 * scale and abs(cy - FACE_CENTRE[1] * scale) < 15 * scale, name


def test_face_result_fields(recognizer, astronaut):
    faces = recognizer.predict(astronaut, color="rgb")
    assert_one_astronaut_face(faces)
    face = faces[0]
    assert all(isinstance(v, int) for v in face.box) and 0 < face.score <= 1
    assert list(face.probabilities) == list(FER2013_CLASSES)
    assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert face.emotion == max(face.probabilities, key=face.probabilities.get)
    d = face.to_dict()  # the one face schema (the API's and predict --json's)
    assert set(d) == {"box", "score", "emotion", "probabilities", "track_id", "landmarks"} and len(d["landmarks"]) == 6
    assert d["track_id"] is None and d["score"] == round(face.score, 4)
    assert d["probabilities"] == {c: round(p, 6) for c, p in face.probabilities.items()}
    assert face.runner_up[0] != face.emotion and face.runner_up[1] <= face.probabilities[face.emotion]
    assert recognizer.provenance() == recognizer.classifier.provenance()
    assert set(recognizer.provenance()) == {"name", "file", "sha256", "backend", "precision"}


def test_no_face_gives_an_empty_list(recognizer):
    assert recognizer.predict(np.full((480, 640, 3), 100, dtype=np.uint8), color="rgb") == []


def test_input_kinds_agree(recognizer, astronaut):
    reference = recognizer.predict(ASTRONAUT)[0]
    for image, color in (
        (str(ASTRONAUT), "rgb"),
        (Image.open(ASTRONAUT), "rgb"),
        (astronaut, "rgb"),
        (np.ascontiguousarray(astronaut[..., ::-1]), "bgr"),
    ):
        face = recognizer.predict(image, color=color)[0]
        assert face.box == reference.box
        np.testing.assert_allclose(list(face.probabilities.values()), list(reference.probabilities.values()))
    with pytest.raises(TypeError, match="path, PIL image or numpy array"):
        recognizer.predict(12)


def test_colour_arrays_need_their_channel_order(recognizer, astronaut):
    """OpenCV reads BGR, PIL RGB, and the pixels cannot tell: a colour array without ``color`` is an error that
    says what to pass, never a silent guess (a BGR photo read as RGB turns happy 0.89 into 0.73)."""
    bgr = np.ascontiguousarray(astronaut[..., ::-1])
    for array in (bgr, np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)])):
        with pytest.raises(ValueError, match="color='bgr' for OpenCV"):
            recognizer.predict(array)
        with pytest.raises(ValueError, match="color='bgr'"):
            recognizer.predict_batch([array])
    assert recognizer.predict(bgr, color="bgr")[0].box == recognizer.predict(astronaut, color="rgb")[0].box
    gray = np.ascontiguousarray(astronaut[..., 1])
    assert len(recognizer.predict(gray)) == 1  # one channel: nothing to say


def test_a_list_given_to_predict_points_to_predict_batch(recognizer):
    for many in ([ASTRONAUT, ASTRONAUT], (ASTRONAUT,)):
        with pytest.raises(TypeError, match=r"predict_batch\(\[\.\.\.\]\)"):
            recognizer.predict(many)


def test_the_public_names_are_listed():
    names = dir(expressnet)
    for name in ("Recognizer", "Face", "list_models", "read_results", "load_model", "create_model", "__version__"):
        assert name in names and name in expressnet.__all__, name


def test_array_conversions(astronaut):
    gray = astronaut[..., 0]
    assert array_to_rgb(gray).shape == (512, 512, 3)
    assert array_to_rgb(gray[..., None]).shape == (512, 512, 3)
    np.testing.assert_array_equal(array_to_rgb(astronaut.astype(np.uint16) * 257), astronaut)
    np.testing.assert_array_equal(array_to_rgb(astronaut / 255.0), astronaut)
    rgba = np.dstack([astronaut, np.full((512, 512), 255, np.uint8)])
    np.testing.assert_array_equal(array_to_rgb(rgba), astronaut)
    np.testing.assert_array_equal(array_to_rgb(rgba[..., [2, 1, 0, 3]], "bgr"), astronaut)
    transparent = rgba.copy()
    transparent[..., 3] = 0
    assert (array_to_rgb(transparent) == 255).all()  # composited onto white
    with pytest.raises(ValueError, match="expected an image array"):
        array_to_rgb(np.zeros((4, 4, 2), np.uint8))


def odd_files(folder: Path, astronaut: np.ndarray) -> dict[str, Path]:
    """The astronaut as gray, RGBA, 16-bit, palette, CMYK and EXIF-rotated files."""
    img = Image.fromarray(astronaut)
    files = {}
    for name, image, fmt in (
        ("gray.jpg", img.convert("L"), "JPEG"),
        ("rgba.png", img.convert("RGBA"), "PNG"),
        ("palette.png", img.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        ("cmyk.jpg", img.convert("CMYK"), "JPEG"),
    ):
        files[name] = folder / name
        image.save(files[name], fmt)
    sixteen = (np.asarray(img.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    files["gray16.png"] = folder / "gray16.png"
    Image.fromarray(sixteen).save(files["gray16.png"])
    assert Image.open(files["gray16.png"]).mode.startswith("I")
    # stored turned 90 degrees clockwise; EXIF orientation 8 tells viewers to turn it back
    exif = Image.Exif()
    exif[0x0112] = 8
    files["exif_rotated.jpg"] = folder / "exif_rotated.jpg"
    img.transpose(Image.Transpose.ROTATE_270).save(files["exif_rotated.jpg"], "JPEG", exif=exif)
    return files


def test_odd_image_files(recognizer, astronaut, tmp_path):
    files = odd_files(tmp_path, astronaut)
    results = recognizer.predict_batch(list(files.values()))
    for name, faces in zip(files, results):
        assert_one_astronaut_face(faces, name=name)  # upright and found, whatever the encoding


def test_broken_files_are_named_and_the_batch_continues(recognizer, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DataError, match=r"corrupt\.jpg"):
        recognizer.predict(corrupt)
    results = recognizer.predict_batch([ASTRONAUT, corrupt, text, tmp_path / "missing.png"], return_exceptions=True)
    assert_one_astronaut_face(results[0])
    assert [type(r) for r in results[1:]] == [DataError] * 3
    assert "corrupt.jpg" in str(results[1]) and "notes.txt" in str(results[2]) and "not found" in str(results[3])


def test_predict_batch_equals_predict(recognizer, astronaut):
    small = np.ascontiguousarray(astronaut[::2, ::2])
    images = [astronaut, np.full((100, 100, 3), 0, np.uint8), small]
    batched = recognizer.predict_batch(images, color="rgb")
    for image, faces in zip(images, batched):
        single = recognizer.predict(image, color="rgb")
        assert [f.box for f in faces] == [f.box for f in single]
        for a, b in zip(faces, single):
            np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-5)
    assert [len(f) for f in batched] == [1, 0, 1]


def test_user_boxes_and_whole_image_detector(recognizer, astronaut):
    faces = recognizer.predict(astronaut, boxes=[(180, 70, 100, 100), (0, 0, 50, 50)], color="rgb")
    assert [f.box for f in faces] == [(180, 70, 100, 100), (0, 0, 50, 50)] and faces[0].score == 1.0
    crop = astronaut[60:190, 160:300]
    whole = Recognizer(recognizer.classifier, "none").predict(crop, color="rgb")
    assert len(whole) == 1 and whole[0].box == (0, 0, 140, 130)


def test_rgb_model_and_alignment(astronaut):
    """Alignment levels the eyes: on a photo turned by 20 degrees the aligned crop differs from the plain one
    and is closer to the crop of the upright photo."""
    aligned = Recognizer(tiny_model(channels=3), align=True, detector_options={"threads": 1})
    plain = Recognizer(aligned.classifier, align=False, detector_options={"threads": 1})
    assert_one_astronaut_face(aligned.predict(astronaut, color="rgb"))
    h, w = astronaut.shape[:2]
    turn = cv2.getRotationMatrix2D(FACE_CENTRE, 20, 1.0)
    tilted = cv2.warpAffine(astronaut, turn, (w, h), borderMode=cv2.BORDER_REPLICATE)
    found = aligned.detect(tilted)
    assert len(found) == 1
    upright = plain.crops([astronaut], [plain.detect(astronaut)]).astype(np.float32)
    with_align = aligned.crops([tilted], [found]).astype(np.float32)
    without = plain.crops([tilted], [found]).astype(np.float32)
    assert np.abs(with_align - without).mean() > 5  # alignment changed the crop
    assert np.abs(with_align - upright).mean() < np.abs(without - upright).mean()


def test_tracker_keeps_ids_on_moving_boxes():
    tracker = IoUTracker(max_missed=2)
    ids = [tracker.update([(10 + 4 * t, 10, 50, 50), (200 - 4 * t, 100, 40, 40)]) for t in range(10)]
    assert all(i == [0, 1] for i in ids)
    assert tracker.update([(200 - 40, 100, 40, 40)]) == [1]  # track 0 missed once
    assert tracker.update([(50, 10, 50, 50), (160, 100, 40, 40)]) == [0, 1]  # back within max_missed
    for _ in range(3):
        tracker.update([])
    assert tracker.update([(50, 10, 50, 50)]) == [2]  # expired after 3 misses: a new id
    assert tracker.update([]) == []


def test_smoothing_reduces_flicker():
    rng = np.random.default_rng(0)
    base = np.array([0.05, 0.05, 0.05, 0.4, 0.05, 0.05, 0.35])  # happy just ahead of neutral
    noisy = [np.clip(base + rng.normal(0, 0.08, 7), 0.001, None) for _ in range(200)]
    noisy = [p / p.sum() for p in noisy]
    raw = [int(np.argmax(p)) for p in noisy]
    smoother = ProbabilitySmoother(0.3)
    smoothed = [int(np.argmax(smoother.update(0, p))) for p in noisy]
    assert flicker_rate([smoothed]) < flicker_rate([raw]) / 2
    assert label_changes(["a", "a", "b", "a"]) == 2 and flicker_rate([["a"], []]) == 0.0
    with pytest.raises(ValueError, match="alpha"):
        ProbabilitySmoother(0.0)


def test_predict_frames_tracks_and_smooths(recognizer, astronaut):
    frames = [VideoFrame(i, i / 25, np.roll(astronaut, 3 * i, axis=1)) for i in range(4)]
    raw = list(recognizer.predict_frames(frames))
    smooth = list(recognizer.predict_frames(frames, smooth=0.5))
    assert [r.frame for r in raw] == [0, 1, 2, 3] and [r.time_s for r in raw] == [0, 0.04, 0.08, 0.12]
    assert [[f.track_id for f in r.faces] for r in raw] == [[0]] * 4
    first = [list(r.faces[0].probabilities.values()) for r in raw]
    np.testing.assert_allclose(list(smooth[0].faces[0].probabilities.values()), first[0])
    expected = 0.5 * np.array(first[1]) + 0.5 * np.array(first[0])
    np.testing.assert_allclose(list(smooth[1].faces[0].probabilities.values()), expected)
    assert smooth[1].to_dict()["faces"][0]["track_id"] == 0


@pytest.mark.data
def test_predict_video_prefix_of_the_real_video(recognizer):
    video = real_data("photos/video/WolfgangLanger_Pexels_pyfeat.mp4")
    results = list(recognizer.predict_video(video, every=10, max_frames=4))
    assert [r.frame for r in results] == [0, 10, 20, 30]
    fps = 472 / 19.7
    assert [r.time_s for r in results] == pytest.approx([f / fps for f in (0, 10, 20, 30)], rel=0.01)
    assert all(len(r.faces) == 1 and r.faces[0].track_id == 0 for r in results)


def test_unreadable_video_is_named(recognizer, tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match=r"clip\.mp4"):
        list(recognizer.predict_video(bad))
    with pytest.raises(DataError, match="not found"):
        list(recognizer.predict_video(tmp_path / "none.mp4"))


def test_import_expressnet_stays_light():
    heavy = ("cv2", "ai_edge_litert", "PIL", "torch", "onnxruntime", "numpy")
    code = f"import expressnet, sys; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_default_model_on_the_demo_image(recognizer):
    faces = recognizer.predict(ASTRONAUT)
    assert_one_astronaut_face(faces)
    assert faces[0].emotion == "happy"  # the astronaut smiles
    assert recognizer.classifier.backend == expressnet.get_record().backend  # the record's inference file


def test_presence_check_is_on_by_default(recognizer):
    """A detector given by name is wrapped in the face-presence check unless ``confirm=False``; "none" (images are
    face crops) and a detector passed in stay as they are unless asked."""
    assert recognizer.confirm and isinstance(recognizer.detector, ConfirmedDetector)
    assert "ConfirmedDetector(BlazeFaceDetector" in repr(recognizer)
    options = {"detector_options": {"threads": 1}}
    plain = Recognizer(recognizer.classifier, confirm=False, **options)
    assert not plain.confirm and type(plain.detector).__name__ == "BlazeFaceDetector"
    assert not Recognizer(recognizer.classifier, "none").confirm
    given = create_detector("blazeface", threads=1)
    assert Recognizer(recognizer.classifier, given).detector is given
    wrapped = Recognizer(recognizer.classifier, given, confirm=True).detector
    assert isinstance(wrapped, ConfirmedDetector) and wrapped.detector is given


@pytest.mark.data
@pytest.mark.slow
def test_no_false_faces_in_the_faceless_video(recognizer):
    """no_face_pyfeat.mp4 (95 frames of sky and a title, no person): 16 faces without the presence check (the
    title's letters), at most 1 with it (frame 71's "Ca", tilted, which the face model too takes for a face)."""
    frames = [f.image for f in VideoSource(real_data("photos/video/no_face_pyfeat.mp4"))]
    assert len(frames) == 95
    plain = Recognizer(recognizer.classifier, confirm=False, detector_options={"threads": 1})
    before = sum(len(plain.predict_rgb([f])[0]) for f in frames)
    after = sum(len(recognizer.predict_rgb([f])[0]) for f in frames)
    assert after <= 1 < 10 <= before, (before, after)


@pytest.fixture(scope="module")
def with_geometry(recognizer) -> Recognizer:
    return Recognizer(recognizer.classifier, geometry=True, detector_options={"threads": 1})


GEOMETRY_FIELDS = {"pose", "gaze", "eyes", "mouth_openness", "looking_at_camera"}


def test_geometry_is_opt_in(recognizer, with_geometry, astronaut):
    """Without ``geometry`` the faces and their schema are as before; with it each face has head pose, gaze, eye
    and mouth openness and looking-at-camera, the same boxes and emotions, and the schema's nested fields."""
    plain = recognizer.predict(astronaut, color="rgb")[0]
    assert plain.geometry is None and plain.mesh is None
    assert plain.pose is plain.gaze is plain.eye_openness is plain.mouth_openness is plain.looking_at_camera is None
    assert not (GEOMETRY_FIELDS | {"mesh"}) & set(plain.to_dict())
    face = with_geometry.predict(astronaut, color="rgb")[0]
    assert face.box == plain.box and face == plain  # equality ignores the geometry
    # the astronaut faces the camera and looks into it, eyes open, smiling with parted lips
    assert abs(face.pose.yaw) < 15 and abs(face.pose.roll) < 10 and face.looking_at_camera is True
    assert min(face.eye_openness) > 0.2 and 0.05 < face.mouth_openness < 0.4
    d = face.to_dict()
    assert set(d) == {"box", "score", "emotion", "probabilities", "track_id", "landmarks"} | GEOMETRY_FIELDS
    assert d["pose"] == {k: round(getattr(face.pose, k), 2) for k in ("yaw", "pitch", "roll")}
    assert d["gaze"] == {"yaw": round(face.gaze.yaw, 2), "pitch": round(face.gaze.pitch, 2)}
    assert d["eyes"] == {
        "openness_right": round(face.eye_openness[0], 4),
        "openness_left": round(face.eye_openness[1], 4),
    }
    assert d["mouth_openness"] == round(face.mouth_openness, 4) and d["looking_at_camera"] is True
    # the mirrored photo: yaw and roll change sign, pitch stays (tested in depth in tests/test_geometry.py)
    mirrored = with_geometry.predict(np.ascontiguousarray(astronaut[:, ::-1]), color="rgb")[0]
    assert mirrored.pose.yaw == pytest.approx(-face.pose.yaw, abs=2)
    assert mirrored.pose.roll == pytest.approx(-face.pose.roll, abs=2)
    assert mirrored.pose.pitch == pytest.approx(face.pose.pitch, abs=2)


def test_geometry_per_call_and_the_mesh(recognizer, with_geometry, astronaut):
    """``predict_rgb(geometry=True)`` (the service's switch) on a recognizer made without it gives what
    ``Recognizer(geometry=True)`` gives; ``mesh`` keeps the 468 points, in the face's box."""
    reference = with_geometry.predict_rgb([astronaut])[0][0].to_dict()
    per_call = recognizer.predict_rgb([astronaut], geometry=True)[0][0].to_dict()
    assert set(per_call) == set(reference)
    for key in ("pose", "gaze", "eyes"):
        assert per_call[key] == pytest.approx(reference[key], abs=0.05), key
    face = recognizer.predict_rgb([astronaut], mesh=True)[0][0]
    assert face.geometry is not None and face.mesh.shape == (468, 3)
    x, y, w, h = face.box
    inside = (face.mesh[:, 0] > x - 0.2 * w) & (face.mesh[:, 0] < x + 1.2 * w) & (face.mesh[:, 1] > y - 0.3 * h)
    assert inside.all() and (face.mesh[:, 1] < y + 1.3 * h).all()
    mesh = face.to_dict()["mesh"]
    assert len(mesh) == 468 and all(len(p) == 3 for p in mesh) and mesh[1] == [round(float(v), 2) for v in face.mesh[1]]
    assert Recognizer(recognizer.classifier, mesh=True, detector_options={"threads": 1}).geometry  # implies it
    # user boxes get geometry too; no face, no geometry to compute
    boxed = with_geometry.predict(astronaut, boxes=[face.box], color="rgb")[0]
    assert boxed.pose.yaw == pytest.approx(face.pose.yaw, abs=3)
    assert with_geometry.predict(np.full((200, 300, 3), 90, np.uint8), color="rgb") == []


def test_geometry_in_the_flat_view(with_geometry, astronaut, tmp_path):
    """The flat rows get the geometry columns only when geometry is on; CSV keeps looking_at_camera a boolean."""
    classes = with_geometry.class_names
    assert not set(GEOMETRY_COLUMNS) & set(columns(classes))
    fields = columns(classes, geometry=True)
    assert fields[: len(columns(classes)) - 4] == columns(classes)[:-4] and fields[-4:] == columns(classes)[-4:]
    assert fields[-4 - len(GEOMETRY_COLUMNS) : -4] == list(GEOMETRY_COLUMNS)
    face = with_geometry.predict(astronaut, color="rgb")[0]
    result = frame_result("astronaut.jpg", 0, None, [face], (512, 512), with_geometry.provenance())
    (row,) = flat_rows(result)
    assert set(row) == set(fields)
    assert (row["yaw"], row["gaze_pitch"], row["eye_open_left"]) == (
        round(face.pose.yaw, 2),
        round(face.gaze.pitch, 2),
        round(face.eye_openness[1], 4),
    )
    assert row["mouth_open"] == round(face.mouth_openness, 4) and row["looking_at_camera"] is True
    plain = frame_result("astronaut.jpg", 0, None, [replace(face, geometry=None)], (512, 512))
    assert not set(GEOMETRY_COLUMNS) & set(flat_rows(plain)[0])
    pd = pytest.importorskip("pandas", reason="read_results makes a pandas DataFrame: the analysis extra")
    out = tmp_path / "rows.csv"
    with RowSink(classes, csv_path=out, geometry=True) as sink:
        sink.open()
        sink.write([result, frame_result("empty.jpg", 0, None, [], (10, 10))])
        sink.finish()
    frame = expressnet.read_results(out)
    assert list(frame.columns) == fields and frame["looking_at_camera"].tolist() == [True]
    assert frame["yaw"].iloc[0] == pytest.approx(row["yaw"]) and pd.api.types.is_float_dtype(frame["gaze_yaw"])
