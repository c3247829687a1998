"""``expressnet predict``: run a :class:`Recognizer` over an image, folder, glob, video file or camera and
write rows (JSONL/CSV), annotated images/videos and a summary. Unreadable inputs are reported and skipped."""

from __future__ import annotations

import glob
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..data.base import DataError
from ..data.images import IMAGE_SUFFIXES
from .outputs import RowWriter, VideoWriter, annotated_name, draw_faces, face_rows, write_image
from .recognizer import Recognizer, load_rgb
from .video import VideoSource, camera_index, is_video_path

if TYPE_CHECKING:
    from rich.progress import Progress

IMAGE_CHUNK = 8  # images whose faces are classified in one batch
ERRORS = (DataError, OSError, ValueError, cv2.error)  # per-input failures: reported, then the next input


@dataclass
class PredictSummary:
    files: int = 0  # inputs attempted: image files, video files, cameras
    frames: int = 0  # processed frames; a still image counts as one
    faces: int = 0
    rows: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # input -> error message
    outputs: list[str] = field(default_factory=list)
    interrupted: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def expand_source(source: str | Path) -> list[Path] | int:
    """A camera index, or the input files of a file, a folder (its images and videos, sorted, not
    recursive) or a glob pattern. Raises :class:`DataError` when nothing matches."""
    camera = camera_index(source)
    if camera is not None:
        return camera
    path = Path(source)
    if path.is_dir():
        files = [p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        files += [p for p in sorted(path.iterdir()) if p.is_file() and is_video_path(p)]
        if not files:
            raise DataError(f"{path}: no image or video files in this folder")
        return sorted(files)
    if path.exists():
        return [path]
    if glob.has_magic(str(source)):
        files = [Path(p) for p in sorted(glob.glob(str(source), recursive=True)) if Path(p).is_file()]
        if not files:
            raise DataError(f"{source}: no files match this pattern")
        return files
    raise DataError(f"{source}: no such file, folder or camera")


def check_outputs(inputs: list[Path], outputs: list[Path | None]) -> None:
    """Refuse output paths that are inputs or repeat each other (nothing may be written over an input)."""
    taken = {p.resolve() for p in inputs}
    for out in outputs:
        if out is None:
            continue
        if out.resolve() in taken:
            raise ValueError(f"{out}: output path is an input or another output; choose another path")
        if out.is_dir():
            raise ValueError(f"{out}: output path is a folder; give a file name")
        taken.add(out.resolve())


def chunks(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def make_progress(enabled: bool) -> Progress | None:
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True), transient=True)


@dataclass
class PredictRun:
    """The state one run shares across its inputs: settings, open row writer, progress, counts."""

    recognizer: Recognizer
    rows: RowWriter
    out_dir: Path | None
    avoid: set[Path]  # paths no output may take: the inputs and the outputs chosen so far
    every: int
    smooth: float | None
    max_frames: int | None
    bar: Progress | None
    warn: Callable[[str], None]
    summary: PredictSummary = field(default_factory=PredictSummary)

    def fail(self, source: str, exc: BaseException) -> None:
        message = str(exc) if source in str(exc) else f"{source}: {exc}"
        self.summary.failures[source] = message
        self.warn(message)

    def images(self, paths: list[Path]) -> None:
        """Decode ``paths`` (skipping unreadable ones), classify their faces in one batch, write rows/images."""
        decoded: list[tuple[Path, np.ndarray]] = []
        for path in paths:
            self.summary.files += 1
            try:
                decoded.append((path, load_rgb(path)))
            except ERRORS as exc:
                self.fail(str(path), exc)
        try:
            results = self.recognizer.predict_rgb([rgb for _, rgb in decoded])
        except ERRORS:  # one bad image must not sink the chunk: redo them one by one
            results = []
            for path, rgb in decoded:
                try:
                    results.append(self.recognizer.predict_rgb([rgb])[0])
                except ERRORS as exc:
                    self.fail(str(path), exc)
                    results.append(None)
        for (path, rgb), faces in zip(decoded, results):
            if faces is None:
                continue
            self.summary.frames += 1
            self.summary.faces += len(faces)
            self.rows.write(face_rows(str(path), 0, None, faces))
            if self.out_dir is not None:
                try:
                    target = annotated_name(path, False, self.out_dir, self.avoid)
                    self.summary.outputs.append(str(write_image(target, draw_faces(rgb, faces))))
                except ERRORS as exc:
                    self.fail(str(path), exc)

    def video(self, source: Path | int) -> None:
        """One video file or camera: rows per face per processed frame, and the annotated video if asked."""
        self.summary.files += 1
        name = f"camera:{source}" if isinstance(source, int) else str(source)
        try:
            with ExitStack() as stack:
                video = stack.enter_context(VideoSource(source, self.every, self.max_frames))
                writer = None
                if self.out_dir is not None:
                    target = annotated_name(Path(name.replace(":", "")), True, self.out_dir, self.avoid)
                    writer = stack.enter_context(VideoWriter(target, (video.fps or 30.0) / self.every))
                task = None if self.bar is None else self.bar.add_task(Path(name).name, total=video.expected_frames)
                try:
                    for result in self.recognizer.predict_frames(video, self.smooth):
                        self.summary.frames += 1
                        self.summary.faces += len(result.faces)
                        self.rows.write(face_rows(name, result.frame, result.time_s, result.faces))
                        if writer is not None:
                            writer.write(draw_faces(result.image, result.faces))
                        if task is not None:
                            self.bar.advance(task)
                except KeyboardInterrupt:  # keep what was processed (the way to end a camera run)
                    self.summary.interrupted = True
                if task is not None:
                    self.bar.remove_task(task)
            if writer is not None and writer.path.exists():
                self.summary.outputs.append(str(writer.path))
        except ERRORS as exc:
            self.fail(name, exc)


def run_predict(
    source: str | Path,
    recognizer: Recognizer,
    jsonl: str | Path | None = None,
    csv_path: str | Path | None = None,
    annotate_dir: str | Path | None = None,
    every: int = 1,
    smooth: float | None = None,
    max_frames: int | None = None,
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
) -> PredictSummary:
    """Process ``source`` and write the outputs; returns the counts, failures and files written.

    Raises :class:`DataError` when ``source`` matches nothing and ``ValueError`` for unusable settings or
    output paths. Ctrl+C stops early and keeps what was written so far (the way to end a camera run).
    """
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    if smooth is not None and not 0 < smooth <= 1:
        raise ValueError(f"--smooth must be in (0, 1], got {smooth}")
    inputs = expand_source(source)
    files = [] if isinstance(inputs, int) else inputs
    jsonl, csv_path = (None if p is None else Path(p) for p in (jsonl, csv_path))
    check_outputs(files, [jsonl, csv_path])
    out_dir = None if annotate_dir is None else Path(annotate_dir)
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: --save-annotated needs a folder")
    avoid = {p.resolve() for p in [*files, jsonl, csv_path] if p is not None}
    bar = make_progress(progress)
    with bar or nullcontext(), RowWriter(recognizer.class_names, jsonl, csv_path) as rows:
        run = PredictRun(recognizer, rows, out_dir, avoid, every, smooth, max_frames, bar,
                         warn or (lambda message: print(f"error: {message}", file=sys.stderr)))  # fmt: skip
        try:
            if isinstance(inputs, int):
                run.video(inputs)
            else:
                images = [p for p in files if not is_video_path(p)]
                task = bar.add_task("images", total=len(images)) if bar is not None and len(images) > 1 else None
                for chunk in chunks(images, IMAGE_CHUNK):
                    run.images(chunk)
                    if task is not None:
                        bar.advance(task, len(chunk))
                for video in (p for p in files if is_video_path(p)):
                    if run.summary.interrupted:
                        break
                    run.video(video)
        except KeyboardInterrupt:
            run.summary.interrupted = True
        run.summary.rows = rows.rows_written
    run.summary.outputs = [str(p) for p in (jsonl, csv_path) if p is not None] + run.summary.outputs
    return run.summary
