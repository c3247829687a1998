"""End-to-end recognizer speed (detect + crop + classify, default model and detector) in frames/s.

* one face, 640x480: the bundled astronaut photo fitted into a 640x480 frame; decode excluded (RGB array in),
  decode included (JPEG file in), and video decode included (the real single-face video, when present);
* a group photo (``../shared/data/photos/group/bbt4_faceapi.jpg``, 7 faces), decode excluded and included;
* the detector alone on the same inputs, its defaults (automatic tiles, retries) against one pass without
  retries (the defaults before them), timed in alternating rounds so that a busy CPU hurts both alike.

    python benchmarks/e2e.py [--threads 2] [--seconds 5] [--model PATH]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from timing import calls_per_second

from expressnet import Recognizer
from expressnet.data import data_root
from expressnet.data.images import read_image
from expressnet.faces import create_detector
from expressnet.infer.sources import VideoSource

ASSET = Path(__file__).resolve().parents[1] / "expressnet" / "assets" / "astronaut.jpg"


def rate(fn, seconds: float) -> float:
    return calls_per_second(fn, seconds, warmup=3)


def one_face_frame() -> np.ndarray:
    """The astronaut photo (512x512) scaled to 480x480 and centred on a black 640x480 frame."""
    face = cv2.resize(read_image(ASSET), (480, 480), interpolation=cv2.INTER_AREA)
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    frame[:, 80:560] = face
    return frame


def video_rate(recognizer: Recognizer, path: Path, seconds: float) -> tuple[float, int]:
    """Frames/s over the video (decode included), looping until ``seconds`` have passed."""
    frames, faces, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        with VideoSource(path) as video:
            for result in recognizer.predict_frames(video):
                frames += 1
                faces += len(result.faces)
    return frames / (time.perf_counter() - start), faces // max(frames, 1)


def median_ms(fn, rounds: int = 15, calls: int = 5) -> list[float]:
    """Milliseconds per call of each round (``calls`` calls each)."""
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        out.append((time.perf_counter() - start) * 1000 / calls)
    return out


def detector_ab(images: dict[str, np.ndarray], threads: int) -> None:
    """Detector defaults against one pass without retries, alternating rounds; medians and the ratio."""
    new, old = (
        create_detector("blazeface", threads=threads),
        create_detector("blazeface", threads=threads, tiles=1, retry="none"),
    )
    print(f"\ndetector alone: {new!r} vs tiles=1, retry=none")
    print(f"{'input':48s} {'faces':>9s} {'new ms':>8s} {'old ms':>8s} {'new/old':>8s}")
    for name, image in images.items():
        new_ms, old_ms = [], []
        for _ in range(4):
            new_ms += median_ms(lambda: new.detect(image), 4)
            old_ms += median_ms(lambda: old.detect(image), 4)
        a, b = float(np.median(new_ms)), float(np.median(old_ms))
        faces = f"{len(new.detect(image))}/{len(old.detect(image))}"
        print(f"{name:48s} {faces:>9s} {a:8.2f} {b:8.2f} {a / b:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per measurement")
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped default model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    recognizer = Recognizer(args.model, detector_options={"threads": args.threads})
    pre = recognizer.preprocessing
    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}")
    model = f"{pre.input_size}x{pre.input_size}x{pre.channels}, tta_flip={recognizer.tta_flip}"
    print(f"model: {model}; backend: {recognizer.classifier.backend}; detector: {recognizer.detector!r}")

    rows = []
    frame = one_face_frame()
    with tempfile.TemporaryDirectory() as tmp:
        jpeg = Path(tmp) / "frame.jpg"
        cv2.imwrite(str(jpeg), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        faces = len(recognizer.predict(frame))
        for name, item in (("decode excluded", frame), ("JPEG decode included", jpeg)):
            rows.append((f"640x480 one face, {name}", faces, rate(lambda: recognizer.predict(item), args.seconds)))
    video = data_root() / "photos" / "video" / "single_face_pyfeat.mp4"
    if video.is_file():
        fps, faces = video_rate(recognizer, video, args.seconds)
        rows.append(("640x360 video, decode included", faces, fps))
    group = data_root() / "photos" / "group" / "bbt4_faceapi.jpg"
    if group.is_file():
        image = read_image(group)
        faces = len(recognizer.predict(image))
        label = f"group photo {image.shape[1]}x{image.shape[0]}"
        for name, item in (("decode excluded", image), ("JPEG decode included", group)):
            rows.append((f"{label}, {name}", faces, rate(lambda: recognizer.predict(item), args.seconds)))
    else:
        print(f"(group photo not found: {group}; set EXPRESSNET_DATA)")

    print(f"\n{'input':48s} {'faces':>5s} {'frames/s':>9s} {'ms/frame':>9s}")
    for name, faces, fps in rows:
        print(f"{name:48s} {faces:5d} {fps:9.1f} {1000 / fps:9.1f}")
    images = {"640x480 one face": frame}
    if video.is_file():
        with VideoSource(video, max_frames=1) as source:
            images["640x360 video frame"] = next(iter(source)).image
    if group.is_file():
        images["group photo 710x473"] = read_image(group)
    images["640x480 no face (gray)"] = np.full((480, 640, 3), 90, dtype=np.uint8)
    detector_ab(images, args.threads)


if __name__ == "__main__":
    main()
