"""The face geometry stage (expressnet.faces.landmarks / geometry / confirm): what it costs, what the presence check
removes and keeps, and how well head pose holds under mirroring and turning (docs/geometry.md).

* false faces: every face the default detector (BlazeFace, automatic tiles, retries) reports on the files with no
  face in ``../shared/data/photos`` (the no-face video frame by frame, the landscape), before and after
  :class:`~expressnet.faces.confirm.ConfirmedDetector` (presence >= 0.5), with the highest presence a false face got;
* true faces: face counts on every other photo (group photos against PROVENANCE.md, the Solvay photo, hard/,
  labelled/) before and after, the lowest presence a kept face got, and the RAF-DB crop test (the 500 aligned
  test crops of tests/test_faces.py: share with a face);
* invariance: head pose of each face against its mirrored photo (yaw and roll negated, pitch kept) and against
  the photo turned by +-15 and +-30 degrees (roll changes by the angle; the photo is first padded with black to
  its diagonal so that nothing is cut and both sides see the same surroundings; focal length fixed), for the
  default landmarker (2 passes, mirrored) and the fast one (1 pass);
* through the Recognizer (``--recognizer``): the same counts from ``Recognizer.predict`` on the record's inference
  file, ``Recognizer(confirm=False)`` (before) against ``Recognizer()`` (the presence check, on by default);
* cost: ms per face of the stage (face model, iris model, geometry) and frames/s of one face in a 640x480 frame
  end to end (detect + classify) without and with the presence check and the stage, in alternating rounds, and
  ``Recognizer.predict`` with ``confirm=False``, by default and with ``geometry=True``.

    python benchmarks/geometry.py [--threads 1] [--rafdb 500] [--skip-faces] [--skip-invariance] [--skip-speed]
                                  [--recognizer]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import cv2
import numpy as np
from timing import alternating_rates

from expressnet import Recognizer
from expressnet.data import data_root
from expressnet.data.images import read_image
from expressnet.faces import create_detector
from expressnet.faces.confirm import MIN_PRESENCE, ConfirmedDetector
from expressnet.faces.geometry import face_geometry, head_pose
from expressnet.faces.landmarks import FaceLandmarker

ASSET = Path(__file__).resolve().parents[1] / "expressnet" / "assets" / "astronaut.jpg"
GROUP_COUNTS = {  # PROVENANCE.md (as tests/test_faces.py)
    "bbt4_faceapi.jpg": 7,
    "t1_insightface.jpg": 6,
    "multi_face_pyfeat.jpg": 5,
    "bbt1_faceapi.jpg": 4,
    "bbt2_faceapi.jpg": 3,
    "couple_deepface.jpg": 2,
    "selfie-many-people_deepface.jpg": 7,
    "stock-group-2_human.jpg": 4,
}
NO_FACE = ("video/no_face_pyfeat.mp4", "hard/noface_landscape_insightface.jpg")
INVARIANCE_PHOTOS = ("labelled/*", "group/bbt1_faceapi.jpg", "group/bbt4_faceapi.jpg", "group/t1_insightface.jpg")


def video_frames(path: Path):
    capture = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def images_of(path: Path):
    return video_frames(path) if path.suffix == ".mp4" else [read_image(path)]


def presences(confirmed: ConfirmedDetector, image: np.ndarray, found) -> list[float]:
    return [m.presence for m in confirmed.landmarker.face_meshes(image, found)]


def false_faces(plain, confirmed, photos: Path) -> None:
    print(f"\nfalse faces on the files with no face (default BlazeFace; after: presence >= {MIN_PRESENCE})")
    print(f"{'file':44s} {'frames':>6s} {'before':>6s} {'after':>6s} {'max presence of false faces':>28s}")
    for name in NO_FACE:
        path = photos / name
        if not path.is_file():
            print(f"{name:44s} (missing)")
            continue
        frames = before = after = 0
        worst = 0.0
        for image in images_of(path):
            found = plain.detect(image)
            frames, before, after = frames + 1, before + len(found), after + len(confirmed.detect(image))
            worst = max([worst, *presences(confirmed, image, found)])
        print(f"{name:44s} {frames:6d} {before:6d} {after:6d} {worst:28.4f}")


def true_faces(plain, confirmed, photos: Path) -> None:
    print("\nfaces kept on the photos with faces (PROVENANCE.md count where it gives one)")
    print(f"{'file':44s} {'truth':>5s} {'before':>6s} {'after':>6s} {'lowest kept':>11s}  presence of those dropped")
    for folder in ("group", "hard", "labelled"):
        for path in sorted((photos / folder).glob("*")):
            if f"{folder}/{path.name}" in NO_FACE:
                continue
            image = read_image(path)
            found, kept = plain.detect(image), confirmed.detect(image)
            scores = presences(confirmed, image, found)
            low = min((s for s in scores if s >= MIN_PRESENCE), default=float("nan"))
            dropped = ", ".join(f"{s:.4f}" for s in scores if s < MIN_PRESENCE)
            truth = GROUP_COUNTS.get(path.name, "")
            print(f"{folder + '/' + path.name:44s} {truth!s:>5s} {len(found):6d} {len(kept):6d} {low:11.4f}  {dropped}")


def rafdb(plain, confirmed, count: int) -> None:
    folder = data_root() / "rafdb" / "DATASET" / "test"
    files = sorted(folder.glob("*/*.jpg"))
    if len(files) < count:
        print(f"\nRAF-DB: {len(files)} test crops in {folder}, need {count}; skipped")
        return
    sample = [files[i] for i in sorted(np.random.default_rng(0).choice(len(files), count, replace=False))]
    before = after = 0
    for path in sample:
        image = read_image(path)
        before += bool(plain.detect(image))
        after += bool(confirmed.detect(image))
    print(f"\nRAF-DB aligned test crops (sample of {count}, as tests/test_faces.py): a face in")
    print(f"  before {before} ({100 * before / count:.1f} %), after {after} ({100 * after / count:.1f} %)")


def recognizer_counts(photos: Path, threads: int, count: int) -> None:
    """Faces reported by ``Recognizer.predict`` (the record's inference file) without and with the presence check,
    on the faceless files, every photo with faces and the RAF-DB crops."""
    before = Recognizer(detector_options={"threads": threads}, threads=threads, confirm=False)
    after = Recognizer(before.classifier, detector_options={"threads": threads})
    print(f"\nthrough the Recognizer ({before.provenance()['file']}): faces before (confirm=False) / after (default)")
    print(f"{'file':44s} {'truth':>5s} {'frames':>6s} {'before':>6s} {'after':>6s}")
    folders = ("group", "hard", "labelled")
    names = [f"{folder}/{p.name}" for folder in folders for p in sorted((photos / folder).glob("*"))]
    videos = ("video/single_face_pyfeat.mp4", "video/video_faceapi.mp4", "video/WolfgangLanger_Pexels_pyfeat.mp4")
    for name in dict.fromkeys([*NO_FACE, *names, *videos]):
        frames = found = kept = 0
        for image in images_of(photos / name):
            frames += 1
            found += len(before.predict_rgb([image])[0])
            kept += len(after.predict_rgb([image])[0])
        truth = 0 if name in NO_FACE else GROUP_COUNTS.get(Path(name).name, "")
        print(f"{name:44s} {truth!s:>5s} {frames:6d} {found:6d} {kept:6d}")
    files = sorted((data_root() / "rafdb" / "DATASET" / "test").glob("*/*.jpg"))
    if count and len(files) >= count:
        sample = [files[i] for i in sorted(np.random.default_rng(0).choice(len(files), count, replace=False))]
        found, kept = (sum(bool(f) for f in r.predict_batch(sample)) for r in (before, after))
        print(f"RAF-DB aligned test crops ({count}): a face in {found} ({100 * found / count:.1f} %) before, "
              f"{kept} ({100 * kept / count:.1f} %) after")  # fmt: skip


def centre(detection) -> np.ndarray:
    x, y, w, h = detection.box
    return np.array([x + w / 2, y + h / 2])


def poses(detector: ConfirmedDetector, image: np.ndarray, focal: float):
    height, width = image.shape[:2]
    found = detector.detect(image)
    return [(d, head_pose(m.points, width, height, focal)) for d, m in zip(found, detector.meshes(image, found))]


def pairs(reference, other, to_other):
    """(pose, pose) of each reference face and the face nearest its centre mapped by ``to_other``."""
    out = []
    for detection, pose in reference:
        where = to_other(centre(detection))
        near = min(other, key=lambda t: np.hypot(*(centre(t[0]) - where)), default=None)
        if near is not None and np.hypot(*(centre(near[0]) - where)) < 0.3 * detection.box[2]:
            out.append((pose, near[1]))
    return out


def pad_to_diagonal(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    side = int(np.ceil(np.hypot(width, height)))
    top, left = (side - height) // 2, (side - width) // 2
    return cv2.copyMakeBorder(image, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT)


def turned(image: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` turned counter-clockwise on screen about its centre (same size) and the 2x3 map of points."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)  # continuous coordinates
    pixels = matrix.copy()
    pixels[:, 2] += matrix[:, :2].sum(axis=1) * 0.5 - 0.5  # the same map on pixel indices
    return cv2.warpAffine(image, pixels, (width, height), flags=cv2.INTER_LINEAR), matrix


def invariance(photos: Path, threads: int) -> None:
    paths = [ASSET] + [p for pattern in INVARIANCE_PHOTOS for p in sorted(photos.glob(pattern))]
    for label, options in (("default (2 passes, mirrored)", {}), ("fast (1 pass)", {"passes": 1, "mirror": False})):
        landmarker = FaceLandmarker(iris=False, threads=threads, **options)
        detector = ConfirmedDetector(create_detector("blazeface", threads=threads), landmarker)
        mirror, turn, worst = [], [], []
        for path in paths:
            photo = read_image(path)
            image = pad_to_diagonal(photo)
            width = image.shape[1]
            focal = float(max(photo.shape[:2]))
            reference = poses(detector, image, focal)
            flipped = poses(detector, np.ascontiguousarray(image[:, ::-1]), focal)
            for p, q in pairs(reference, flipped, lambda c: np.array([width - c[0], c[1]])):
                mirror.append((p.yaw + q.yaw, p.pitch - q.pitch, p.roll + q.roll))
            for angle in (-30, -15, 15, 30):
                copy, matrix = turned(image, angle)
                for p, q in pairs(reference, poses(detector, copy, focal), lambda c: matrix @ np.append(c, 1.0)):
                    error = (q.yaw - p.yaw, q.pitch - p.pitch, (q.roll - p.roll + angle + 180) % 360 - 180)
                    turn.append((abs(angle), *error))
                    if abs(error[0]) > 4 or abs(error[1]) > 4 or abs(error[2]) > 3:
                        worst.append(
                            f"{path.name} {angle:+d}: yaw {error[0]:+.1f} pitch {error[1]:+.1f} roll {error[2]:+.1f}"
                        )
        m, t = np.abs(np.array(mirror)), np.array(turn)
        print(f"\nhead-pose invariance, {label}: {len(paths)} photos")
        print(f"  mirrored ({len(m)} faces): |yaw + yaw'| mean {m[:, 0].mean():.2f} max {m[:, 0].max():.2f}; "
              f"|pitch - pitch'| mean {m[:, 1].mean():.2f} max {m[:, 1].max():.2f}; "
              f"|roll + roll'| mean {m[:, 2].mean():.2f} max {m[:, 2].max():.2f} degrees")  # fmt: skip
        for angle in (15, 30):
            e = np.abs(t[t[:, 0] == angle, 1:])
            print(f"  turned +-{angle} ({len(e)} faces): yaw change mean {e[:, 0].mean():.2f} max {e[:, 0].max():.2f}; "
                  f"pitch change mean {e[:, 1].mean():.2f} max {e[:, 1].max():.2f}; "
                  f"roll error mean {e[:, 2].mean():.2f} max {e[:, 2].max():.2f} degrees")  # fmt: skip
        print("  past the bounds (yaw, pitch 4, roll 3): " + ("; ".join(worst) or "none"))


def cpu_ms(fn, calls: int = 20, warmup: int = 3) -> float:
    """CPU time of this process per call in ms (less disturbed by other work on a busy machine than the wall clock;
    with one thread everywhere it is what the wall clock would read on an idle core); the best of three runs."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - start) * 1000 / calls)
    return best


def one_face_frame() -> np.ndarray:
    """The astronaut photo scaled to 480x480 on a black 640x480 frame (as benchmarks/e2e.py)."""
    face = cv2.resize(read_image(ASSET), (480, 480), interpolation=cv2.INTER_AREA)
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    frame[:, 80:560] = face
    return frame


def speed(threads: int, photos: Path) -> None:
    frame = one_face_frame()
    height, width = frame.shape[:2]
    plain = Recognizer(detector_options={"threads": threads}, threads=threads, confirm=False)
    stages = {
        "default (2 passes, mirrored)": FaceLandmarker(threads=threads),
        "fast (1 pass)": FaceLandmarker(passes=1, mirror=False, threads=threads),
    }
    print(f"\ncost, {platform.processor() or platform.machine()}, {threads} thread(s)")
    images = {"640x480 one face": frame}
    group = photos / "group" / "bbt4_faceapi.jpg"
    if group.is_file():
        images["group photo bbt4 (7 faces)"] = read_image(group)
    print("ms per face, alternating rounds (best round each): the face model (with its crops), + the iris model, +")
    print("the geometry (head pose, gaze, openness)")
    print(f"{'stage':30s} {'input':28s} {'faces':>5s} {'face model':>10s} {'+ iris':>7s} {'+ geometry':>10s}")
    for name, image in images.items():
        found = plain.detector.detect(image)
        h, w = image.shape[:2]
        fns = {}
        for label, landmarker in stages.items():
            fns[(label, "face")] = lambda m=landmarker: m.face_meshes(image, found)
            fns[(label, "iris")] = lambda m=landmarker: m(image, found)
            fns[(label, "geometry")] = lambda m=landmarker: [face_geometry(x, w, h) for x in m(image, found)]
        cpu = {key: cpu_ms(fn) / len(found) for key, fn in fns.items()}
        rates = alternating_rates(fns, len(found), rounds=8, window=0.5)
        for label in stages:
            ms = [1000 / rates[(label, part)] for part in ("face", "iris", "geometry")]
            print(f"{label:30s} {name:28s} {len(found):5d} {ms[0]:10.2f} {ms[1]:7.2f} {ms[2]:10.2f}  wall")
            ms = [cpu[(label, part)] for part in ("face", "iris", "geometry")]
            print(f"{'':30s} {'':28s} {'':5s} {ms[0]:10.2f} {ms[1]:7.2f} {ms[2]:10.2f}  CPU")

    confirmed = ConfirmedDetector(plain.detector)
    staged = {label: ConfirmedDetector(plain.detector, landmarker) for label, landmarker in stages.items()}

    def run(detector, with_stage: bool):
        def once():
            found = detector.detect(frame)
            plain.classify([frame], [found])
            if with_stage:
                for mesh in detector.meshes(frame, found):
                    face_geometry(mesh, width, height)

        return once

    options = {"detector_options": {"threads": threads}}
    default = Recognizer(plain.classifier, **options)
    with_geometry = Recognizer(plain.classifier, geometry=True, **options)
    fns = {
        "Recognizer(confirm=False).predict": lambda: plain.predict(frame, color="rgb"),
        "Recognizer().predict (the default: presence check)": lambda: default.predict(frame, color="rgb"),
        "Recognizer(geometry=True).predict": lambda: with_geometry.predict(frame, color="rgb"),
        "detect + classify": run(plain.detector, False),
        "+ presence check": run(confirmed, False),
    }
    fns.update({f"+ presence + stage, {label}": run(d, True) for label, d in staged.items()})
    cpu = {name: cpu_ms(fn, calls=40) for name, fn in fns.items()}
    rates = alternating_rates(fns, 1, rounds=10, window=1.0)
    print("\none face, 640x480, decode excluded: wall clock (alternating rounds, best round each) and CPU time")
    print("(frames/s from CPU time: what one core would give without other work on the machine)")
    base, cpu_base = rates["detect + classify"], cpu["detect + classify"]
    for name, fps in rates.items():
        print(
            f"  {name:50s} wall {fps:6.1f} frames/s {fps / base:5.2f}x | CPU {cpu[name]:6.2f} ms "
            f"{1000 / cpu[name]:6.1f} frames/s {cpu_base / cpu[name]:5.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rafdb", type=int, default=500, help="RAF-DB test crops to check (0: skip)")
    parser.add_argument("--skip-faces", action="store_true", help="skip the false / true face counts")
    parser.add_argument("--skip-invariance", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--recognizer", action="store_true", help="also count faces through Recognizer.predict")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    photos = data_root() / "photos"
    if photos.is_dir() and not args.skip_faces:
        plain = create_detector("blazeface", threads=args.threads)
        confirmed = ConfirmedDetector(plain)
        false_faces(plain, confirmed, photos)
        true_faces(plain, confirmed, photos)
        if args.rafdb:
            rafdb(plain, confirmed, args.rafdb)
    if photos.is_dir() and args.recognizer:
        recognizer_counts(photos, args.threads, args.rafdb)
    elif not photos.is_dir():
        print(f"(photos not found: {photos}; set EXPRESSNET_DATA)")
    if not args.skip_invariance:
        invariance(photos, args.threads)
    if not args.skip_speed:
        speed(args.threads, photos)


if __name__ == "__main__":
    main()
