"""Prediction outputs in one schema: a **frame result** per image or processed video frame, the same object the
HTTP API returns (docs/results.md)::

    {"source": "photos/a.jpg", "frame": 0, "time_s": null, "image": {"width": 512, "height": 512},
     "faces": [{"box": [x, y, w, h], "score": 0.93, "emotion": "happy", "probabilities": {...},
                "track_id": null, "landmarks": [[x, y], ...]}],
     "model": {"name": "fer2013", "file": "fer2013.int8.onnx", "sha256": "ed5290ed5a73", "backend": "onnx",
               "precision": "int8"}}

``predict --json`` writes one such line per image and processed frame (faces may be ``[]``). The **flat rows** of
CSV, Parquet and :func:`read_results` (a pandas DataFrame) are a view of it (:func:`flat_rows`): one row per face
(``x, y, w, h``, ``p_<class>``, the model's name, sha256 prefix, backend and precision in every row), and with
``all_frames`` one row (``face_detected`` false) for a frame or image without a face; with face geometry
(``Recognizer(geometry=True)``) the :data:`GEOMETRY_COLUMNS` after the ``p_<class>`` ones. Annotated images and
videos are drawn here too.

:class:`RowSink` (long jobs) appends results as they come, to JSONL, CSV and a folder of Parquet parts (or to
standard output: ``-``), and keeps a progress journal beside them (``OUT.progress``: the position reached and
the byte length of every output at that point), so that a run killed at any moment can be resumed: the outputs are
cut back to the last committed length and the run goes on from the journal's position. Image and video writers
write under a temporary name beside the target and rename it into place when complete.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..io import OutputExists, atomic_output, atomic_write_text, refuse_existing
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
MODEL_COLUMNS = ("model", "model_sha256", "backend", "precision")  # after the p_<class> columns
# with face geometry only, between the p_<class> and the model columns (the face's pose, gaze and eyes fields, and
# in videos blink_s: the duration of the blink the face's track ended at this frame, empty at other frames)
GEOMETRY_COLUMNS = (
    "yaw",
    "pitch",
    "roll",
    "gaze_yaw",
    "gaze_pitch",
    "eye_open_right",
    "eye_open_left",
    "mouth_open",
    "looking_at_camera",
    "blink_s",
)
STDOUT = "-"
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


def columns(class_names: Sequence[str], geometry: bool = False) -> list[str]:
    """Flat row fields: the fixed ones, ``p_<class>`` for each class in the model's order, with ``geometry`` the
    :data:`GEOMETRY_COLUMNS`, then the model's."""
    return [*FIXED_COLUMNS, *(f"p_{c}" for c in class_names), *(GEOMETRY_COLUMNS if geometry else ()), *MODEL_COLUMNS]


def geometry_values(face: dict[str, Any]) -> dict[str, Any]:
    """The :data:`GEOMETRY_COLUMNS` of a face of the schema that has geometry (``pose``), else {}."""
    if face.get("pose") is None:
        return {}
    pose, gaze, eyes = face["pose"], face.get("gaze") or {}, face.get("eyes") or {}
    return {
        "yaw": pose["yaw"],
        "pitch": pose["pitch"],
        "roll": pose["roll"],
        "gaze_yaw": gaze.get("yaw"),
        "gaze_pitch": gaze.get("pitch"),
        "eye_open_right": eyes.get("openness_right"),
        "eye_open_left": eyes.get("openness_left"),
        "mouth_open": face.get("mouth_openness"),
        "looking_at_camera": face.get("looking_at_camera"),
        "blink_s": face["blink"]["duration_s"] if face.get("blink") else None,
    }


def frame_result(
    source: str,
    frame: int,
    time_s: float | None,
    faces: Sequence[Face],
    size: tuple[int, int] | None = None,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One image or video frame in the results schema (see the module docstring); ``size`` is (width, height),
    ``model`` the classifier's provenance. Still images have frame 0 and no time_s."""
    return {
        "source": source,
        "frame": frame,
        "time_s": None if time_s is None else round(time_s, 4),
        "image": None if size is None else {"width": int(size[0]), "height": int(size[1])},
        "faces": [f.to_dict() for f in faces],
        "model": model,
    }


def flat_rows(result: dict[str, Any], all_frames: bool = False) -> list[dict[str, Any]]:
    """The flat view of a frame result: one row per face; a frame without faces has none, or with
    ``all_frames`` one row with ``face_detected`` false and every face field empty (None). ``face_detected`` is
    also false for the whole-image fallback (``no_face="whole"``: score 0)."""
    model = result.get("model") or {}
    base = {"source": result["source"], "frame": result["frame"], "time_s": result["time_s"]}
    tail = {
        "model": model.get("name"),
        "model_sha256": model.get("sha256"),
        "backend": model.get("backend"),
        "precision": model.get("precision"),
    }
    if not result["faces"]:
        if not all_frames:
            return []
        return [{**dict.fromkeys(FIXED_COLUMNS), **base, "face_detected": False, **tail}]
    rows = []
    for index, face in enumerate(result["faces"]):
        x, y, w, h = face["box"]
        row = {**base, "face_detected": face["score"] > 0, "face": index, "track_id": face.get("track_id")}
        row.update(x=x, y=y, w=w, h=h, score=face["score"], emotion=face["emotion"])
        row.update({f"p_{c}": p for c, p in face["probabilities"].items()}, **geometry_values(face), **tail)
        rows.append(row)
    return rows


def face_rows(
    source: str,
    frame: int,
    time_s: float | None,
    faces: Sequence[Face],
    all_frames: bool = False,
    model: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The flat rows of one image or frame (:func:`flat_rows` of its :func:`frame_result`)."""
    return flat_rows(frame_result(source, frame, time_s, faces, None, model), all_frames)


JOURNAL_VERSION = 2  # 2: a video's state is FaceTracks.state_dict (tracks, smoothing, blinks)
PART_ROWS = 20_000  # Parquet: rows per part file (one row group each)
PART_SECONDS = 30.0  # Parquet: a part is also closed (and the run committed) this often
INT_COLUMNS = ("frame", "face", "track_id", "x", "y", "w", "h")


@dataclass
class Record:
    """The results of one stream result (an image, a video frame or an unreadable input), as engines hand them to
    the writer: ``results`` its frame results (:func:`frame_result`; none for an unreadable input), ``first`` counts
    a new input, ``frames`` the frames it adds (0 or 1), ``error`` the message of an unreadable input, ``commit``
    the position after it when it ends a chunk (JSON-able dict)."""

    index: int
    source: str
    results: list[dict[str, Any]]
    frames: int = 1
    faces: int = 0
    error: str | None = None
    first: bool = True
    commit: dict[str, Any] | None = None


def journal_path(targets: Sequence[Path]) -> Path:
    """The progress journal of a run: beside its first output, named after it (``rows.jsonl.progress``)."""
    first = targets[0]
    return first.with_name(first.name + ".progress")


def csv_line(fields: Sequence[str], row: dict[str, Any] | None = None) -> bytes:
    """One CSV row as bytes (the header when ``row`` is None), as :class:`csv.DictWriter` writes it."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fields, restval="")
    if row is None:
        writer.writeheader()
    else:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue().encode("utf-8", "surrogateescape")


def json_line(result: dict[str, Any]) -> bytes:
    """One JSONL line of a frame result (file names that are not UTF-8 keep their bytes, escaped)."""
    return json.dumps(result).encode("utf-8", "surrogateescape") + b"\n"


def parquet_schema(fields: Sequence[str], model: dict[str, Any] | None = None):
    """The Arrow schema of the flat rows (needs pyarrow: the ``ray`` extra), with the model's provenance in its
    metadata (key ``expressnet``)."""
    pa = import_pyarrow()
    types = {"source": pa.string(), "time_s": pa.float64(), "face_detected": pa.bool_(), "score": pa.float64()}
    types.update(
        emotion=pa.string(), **dict.fromkeys(INT_COLUMNS, pa.int64()), **dict.fromkeys(MODEL_COLUMNS, pa.string())
    )
    types["looking_at_camera"] = pa.bool_()
    schema = pa.schema([(f, types.get(f, pa.float64())) for f in fields])
    return schema.with_metadata({"expressnet": json.dumps({"model": model})}) if model is not None else schema


def import_pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "Parquet output needs pyarrow: pip install 'expressnet[ray]' (or pip install pyarrow)", name="pyarrow"
        ) from exc
    return pyarrow


class RowSink:
    """Frame results appended as they come: JSONL lines (the results schema) to a file or standard output (``-``),
    flat rows to a CSV file or standard output and/or a folder of Parquet parts (``part-00000.parquet``, ...); any
    may be None; ``geometry``: the rows have the :data:`GEOMETRY_COLUMNS` (``Recognizer(geometry=True)``). File
    outputs keep a progress journal for ``resume``; standard output cannot be resumed.

    ``open()`` refuses outputs that exist (:class:`OutputExists`) unless ``overwrite`` (start again) or
    ``resume``: then the journal's ``settings`` must equal these ones, every output is cut back to the length
    the journal committed, and ``open()`` returns the journal (``position`` and ``summary`` to continue from);
    outputs without a journal were finished: ``open()`` returns ``{"complete": True}`` and writes nothing.
    ``commit(position, summary)`` flushes and records the state (Parquet: when a part is due); ``finish()`` closes
    the last part, flushes and deletes the journal; ``close()`` keeps it (an interrupted run). ``all_frames``: a
    flat row for each frame without a face too; ``model``: the provenance for the Parquet metadata."""

    def __init__(
        self,
        class_names: Sequence[str],
        jsonl: str | Path | None = None,
        csv_path: str | Path | None = None,
        parquet: str | Path | None = None,
        *,
        settings: dict[str, Any] | None = None,
        resume: bool = False,
        overwrite: bool = False,
        all_frames: bool = False,
        model: dict[str, Any] | None = None,
        geometry: bool = False,
    ) -> None:
        self.fields = columns(class_names, geometry)
        given = (("jsonl", jsonl), ("csv", csv_path), ("parquet", parquet))
        self.stdout = [k for k, v in given if v is not None and str(v) == STDOUT]
        if len(self.stdout) > 1 or "parquet" in self.stdout:
            raise ValueError("standard output ('-') takes one output: --json - or --csv -")
        if self.stdout and resume:
            raise ValueError("--resume continues file outputs; standard output ('-') cannot be resumed")
        self.paths = {k: Path(v) for k, v in given if v is not None and k not in self.stdout}
        self.settings = settings or {}
        self.resume, self.overwrite, self.all_frames = resume, overwrite, all_frames
        self.journal = journal_path(list(self.paths.values())) if self.paths else None
        self.files: dict[str, Any] = {}
        self.parts = 0
        self.buffer: list[dict[str, Any]] = []
        self.part_started = time.monotonic()
        self.rows_written = 0
        if "parquet" in self.paths:
            self.schema = parquet_schema(self.fields, model)

    def existing(self) -> list[Path]:
        found = [p for k, p in self.paths.items() if k != "parquet" and (p.exists() or p.is_symlink())]
        if "parquet" in self.paths and self.parquet_parts():
            found.append(self.paths["parquet"])
        return found

    def parquet_parts(self) -> list[Path]:
        folder = self.paths["parquet"]
        return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []

    def open(self) -> dict[str, Any] | None:
        self.open_stdout()
        if not self.paths:
            return None
        if "parquet" in self.paths and self.paths["parquet"].exists() and not self.paths["parquet"].is_dir():
            raise ValueError(f"{self.paths['parquet']}: --parquet needs a folder (it gets part-*.parquet files)")
        state = None
        existing = self.existing()
        if self.resume and self.journal.exists():
            state = json.loads(self.journal.read_text())
            self.check_journal(state)
        elif self.resume and existing:
            return {"complete": True}
        elif existing and not self.overwrite:
            if self.journal.exists():
                raise OutputExists(f"{existing[0]}: an interrupted run left it; add --resume to continue it")
            refuse_existing(*existing)
        if state is None:  # the journal exists before the outputs do: outputs without one are complete
            self.write_journal(None, None, dict.fromkeys(self.paths, 0))
        self.open_files(state)
        return state

    def open_stdout(self) -> None:
        for kind in self.stdout:
            self.files[kind] = sys.stdout.buffer
            if kind == "csv":
                self.files[kind].write(csv_line(self.fields))

    def check_journal(self, state: dict[str, Any]) -> None:
        if state.get("version") != JOURNAL_VERSION:
            raise ValueError(f"{self.journal}: a progress journal of another version; remove it to start again")
        if state.get("settings") != self.settings:
            before, now = state.get("settings") or {}, self.settings
            changed = sorted(k for k in {*before, *now} if before.get(k) != now.get(k))
            raise ValueError(f"{self.journal}: the run being resumed had other settings ({', '.join(changed)})")
        if sorted(state["outputs"]) != sorted(self.paths):
            raise ValueError(f"{self.journal}: the run being resumed wrote {', '.join(sorted(state['outputs']))}")

    def open_files(self, state: dict[str, Any] | None) -> None:
        committed = state["outputs"] if state else {}
        for kind in ("jsonl", "csv"):
            if kind not in self.paths:
                continue
            path = self.paths[kind]
            path.parent.mkdir(parents=True, exist_ok=True)
            length = int(committed.get(kind, 0))
            if state is not None and (not path.is_file() or path.stat().st_size < length):
                raise ValueError(f"{path}: shorter than the progress journal says; it cannot be resumed")
            self.files[kind] = f = path.open("r+b" if state is not None else "wb")
            f.truncate(length)
            f.seek(length)
            if kind == "csv" and length == 0:
                f.write(csv_line(self.fields))
        if "parquet" in self.paths:
            folder = self.paths["parquet"]
            folder.mkdir(parents=True, exist_ok=True)
            self.parts = int(committed.get("parquet", 0))
            for part in self.parquet_parts():  # parts after the journal's (or all, starting again)
                if int(part.stem.split("-")[1]) >= self.parts:
                    part.unlink()

    def write(self, results: Sequence[dict[str, Any]]) -> int:
        """Append frame results; returns the number of flat rows they make."""
        count = 0
        for result in results:
            if "jsonl" in self.files:
                self.files["jsonl"].write(json_line(result))
            rows = flat_rows(result, self.all_frames)
            if "csv" in self.files:
                for row in rows:
                    self.files["csv"].write(csv_line(self.fields, row))
            if "parquet" in self.paths:
                self.buffer.extend(rows)
            count += len(rows)
        self.rows_written += count
        return count

    def write_part(self) -> None:
        pa = import_pyarrow()
        if not self.buffer:
            return
        data = {f: [row.get(f) for row in self.buffer] for f in self.fields}
        table = pa.Table.from_pydict(data, schema=self.schema)
        target = self.paths["parquet"] / f"part-{self.parts:05d}.parquet"
        with atomic_output(target) as tmp:
            pa.parquet.write_table(table, tmp, row_group_size=len(self.buffer))
        self.parts += 1
        self.buffer = []
        self.part_started = time.monotonic()

    def commit(self, position: dict[str, Any] | None, summary: dict[str, Any] | None, force: bool = False) -> bool:
        """Flush and record ``position`` and ``summary`` with the outputs' lengths; with Parquet only when a part
        is due (or ``force``). Returns whether it committed."""
        for kind in self.stdout:
            self.files[kind].flush()
        if self.journal is None:
            return False
        if "parquet" in self.paths:
            due = len(self.buffer) >= PART_ROWS or time.monotonic() - self.part_started >= PART_SECONDS
            if not (due or force):
                return False
            self.write_part()
        lengths: dict[str, int] = {}
        for kind, f in self.files.items():
            if kind in self.stdout:
                continue
            f.flush()
            lengths[kind] = f.tell()
        if "parquet" in self.paths:
            lengths["parquet"] = self.parts
        self.write_journal(position, summary, lengths)
        return True

    def write_journal(self, position: dict | None, summary: dict | None, lengths: dict[str, int]) -> None:
        state = {"version": JOURNAL_VERSION, "settings": self.settings, "position": position, "summary": summary}
        atomic_write_text(self.journal, json.dumps({**state, "outputs": lengths}) + "\n")

    def finish(self, position: dict[str, Any] | None = None, summary: dict[str, Any] | None = None) -> None:
        """The last commit; the outputs are complete and the journal goes."""
        self.commit(position, summary, force=True)
        self.close()
        if self.journal is not None:
            self.journal.unlink(missing_ok=True)

    def close(self) -> None:
        for kind, f in self.files.items():
            if kind in self.stdout:
                f.flush()
            else:
                f.close()
        self.files = {}

    def __enter__(self) -> RowSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_results(path: str | Path) -> Iterator[dict[str, Any]]:
    """The flat rows of a predict output, one at a time for JSONL (frame results are flattened with a row for each
    frame without a face; flat JSONL lines of older versions come as they are); CSV values stay text."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".parquet":
        pa = import_pyarrow()
        yield from pa.parquet.read_table(path).to_pylist()
        return
    if path.suffix.lower() == ".csv":
        with path.open(newline="", errors="surrogateescape") as f:
            yield from csv.DictReader(f)
        return
    with path.open(errors="surrogateescape") as f:
        for line in f:
            if line.strip():
                item = json.loads(line)
                yield from (flat_rows(item, all_frames=True) if "faces" in item else [item])


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The flat rows of a JSONL file, a CSV file or a folder (or file) of Parquet parts (:func:`iter_results`)."""
    return list(iter_results(path))


def read_results(path: str | Path):
    """``predict``'s results (JSONL, CSV or Parquet) as a pandas DataFrame of flat rows, one per face (and one per
    frame without a face), typed: numbers, booleans, missing values (needs pandas: ``pip install pandas``)."""
    try:
        import pandas as pd
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"read_results makes a pandas DataFrame: pip install 'expressnet[analysis]' ({exc.name} is missing)",
            name="pandas",
        ) from exc
    path = Path(path)
    if path.suffix.lower() == ".csv":
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
        if "face_detected" in frame:
            frame["face_detected"] = frame["face_detected"].astype(str).eq("True")
        if "looking_at_camera" in frame:  # empty where there is no face: missing, not False
            frame["looking_at_camera"] = frame["looking_at_camera"].map(
                {"True": True, "False": False, True: True, False: False}
            )
        return frame
    return pd.DataFrame(read_rows(path))


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
