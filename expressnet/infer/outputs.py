"""Prediction outputs: one JSONL line / CSV row per face per frame (and, with ``all_frames``, one row for each
frame or image without a face), and annotated images and videos.

Every file is written under a temporary name beside its target and renamed into place when complete.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..io import atomic_output
from .recognizer import Face
from .sources import real_path

FIXED_COLUMNS = (
    "source",
    "frame",
    "time_s",
    "face_detected",
    "face",
    "track_id",
    "x",
    "y",
    "w",
    "h",
    "score",
    "emotion",
)
IMAGE_OUTPUT_SUFFIXES = (".jpg", ".jpeg", ".png")
PALETTE = {
    "happy": (46, 204, 64),
    "neutral": (200, 200, 200),
    "sad": (0, 116, 217),
    "angry": (255, 65, 54),
    "surprise": (255, 220, 0),
    "fear": (177, 13, 201),
    "disgust": (61, 153, 112),
    "contempt": (255, 133, 27),
}


def columns(class_names: Sequence[str]) -> list[str]:
    """Row fields: the fixed ones, then ``p_<class>`` for each class in the model's order."""
    return [*FIXED_COLUMNS, *(f"p_{c}" for c in class_names)]


def face_rows(
    source: str, frame: int, time_s: float | None, faces: Sequence[Face], all_frames: bool = False
) -> list[dict[str, Any]]:
    """One row per face. A frame without faces has none, or with ``all_frames`` one row with
    ``face_detected`` false and every face field empty (None; JSON lines have no ``p_*`` keys). Still
    images have frame 0 and no time_s; ``face_detected`` is also false for the whole-image fallback
    (``no_face="whole"``: score 0)."""
    time_s = None if time_s is None else round(time_s, 4)
    if not faces and all_frames:
        return [
            {**dict.fromkeys(FIXED_COLUMNS), "source": source, "frame": frame, "time_s": time_s, "face_detected": False}
        ]
    rows = []
    for index, face in enumerate(faces):
        x, y, w, h = face.box
        row = {"source": source, "frame": frame, "time_s": time_s, "face_detected": face.score > 0}
        row.update(face=index, track_id=face.track_id, x=x, y=y, w=w, h=h, score=round(face.score, 4))
        row.update(emotion=face.emotion, **{f"p_{c}": round(p, 6) for c, p in face.probabilities.items()})
        rows.append(row)
    return rows


class RowWriter:
    """Streams rows to a JSONL and/or a CSV file (either may be None); both appear complete when the
    ``with`` block ends normally and not at all when it raises."""

    def __init__(self, class_names: Sequence[str], jsonl: str | Path | None = None, csv_path: str | Path | None = None):
        self.fields = columns(class_names)
        self.targets = {"jsonl": jsonl, "csv": csv_path}
        self.rows_written = 0

    def __enter__(self) -> RowWriter:
        self.stack = ExitStack()
        self.jsonl_file = self.csv_writer = None
        try:
            if self.targets["jsonl"] is not None:
                tmp = self.stack.enter_context(atomic_output(self.targets["jsonl"]))
                self.jsonl_file = self.stack.enter_context(tmp.open("w"))
            if self.targets["csv"] is not None:
                tmp = self.stack.enter_context(atomic_output(self.targets["csv"]))
                # file names that are not UTF-8 keep their bytes (JSON escapes them)
                csv_file = self.stack.enter_context(tmp.open("w", newline="", errors="surrogateescape"))
                self.csv_writer = csv.DictWriter(csv_file, self.fields, restval="")
                self.csv_writer.writeheader()
        except BaseException:
            self.stack.close()
            raise
        return self

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            if self.jsonl_file is not None:
                self.jsonl_file.write(json.dumps(row) + "\n")
            if self.csv_writer is not None:
                self.csv_writer.writerow({k: "" if v is None else v for k, v in row.items()})
        self.rows_written += len(rows)

    def __exit__(self, *exc) -> bool:
        return self.stack.__exit__(*exc)


def label_color(emotion: str) -> tuple[int, int, int]:
    """A fixed RGB colour per emotion name (the same name, the same colour)."""
    if emotion in PALETTE:
        return PALETTE[emotion]
    h = sum(map(ord, emotion))
    return (h * 67 % 256, h * 151 % 256, h * 233 % 256)


def draw_faces(rgb: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of ``rgb`` with each face's box and "emotion probability [#track]" drawn on it."""
    out = np.ascontiguousarray(rgb).copy()
    thickness = max(1, round(max(out.shape[:2]) / 400))
    font_scale = max(0.4, max(out.shape[:2]) / 1200)
    for face in faces:
        x, y, w, h = face.box
        color = label_color(face.emotion)
        cv2.rectangle(out, (x, y), (x + w, y + h), color, thickness)
        label = f"{face.emotion} {face.probabilities[face.emotion]:.2f}"
        if face.track_id is not None:
            label += f" #{face.track_id}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = y - th - base - 2 if y - th - base - 2 >= 0 else y + h  # above the box, else below it
        left = max(0, min(x, out.shape[1] - tw - 2))  # inside the image
        cv2.rectangle(out, (left, top), (left + tw + 2, top + th + base + 2), color, -1)
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(out, label, (left + 1, top + th + 1), font, font_scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return out


def write_image(path: str | Path, rgb: np.ndarray) -> Path:
    """Encode an RGB image by the path's suffix (JPEG quality 90) and write it atomically."""
    path = Path(path)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"{path}: cannot encode the image")
    with atomic_output(path) as tmp:
        tmp.write_bytes(data.tobytes())
    return path


class VideoWriter:
    """An annotated video (mp4v) opened on the first frame (for its size): it appears complete when the
    ``with`` block ends normally and not at all when it raises."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path, self.fps = Path(path), fps if fps > 0 else 30.0
        self.writer: cv2.VideoWriter | None = None

    def __enter__(self) -> VideoWriter:
        self.stack = ExitStack()
        return self

    def write(self, rgb: np.ndarray) -> None:
        if self.writer is None:
            tmp = self.stack.enter_context(atomic_output(self.path))
            height, width = rgb.shape[:2]
            self.writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            self.stack.callback(self.writer.release)  # runs before the rename
            if not self.writer.isOpened():
                raise OSError(f"{self.path}: cannot open a video writer (mp4v)")
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def __exit__(self, *exc) -> bool:
        return self.stack.__exit__(*exc)


def annotated_name(source: Path, is_video: bool, out_dir: Path, avoid: set[Path]) -> Path:
    """``out_dir/<stem>_annotated<suffix>`` (.mp4 for videos; images keep a JPEG/PNG suffix, else .png),
    numbered when that path is in ``avoid`` (inputs and outputs already chosen); adds the choice to ``avoid``."""
    suffix = source.suffix.lower()
    suffix = ".mp4" if is_video else suffix if suffix in IMAGE_OUTPUT_SUFFIXES else ".png"
    path, n = out_dir / f"{source.stem}_annotated{suffix}", 1
    while real_path(path) in avoid:
        n += 1
        path = out_dir / f"{source.stem}_annotated_{n}{suffix}"
    avoid.add(real_path(path))
    return path
