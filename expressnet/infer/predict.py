"""``expressnet predict``: run a :class:`Recognizer` over an image, folder, glob, video file or camera and
write rows (JSONL/CSV), annotated images/videos and a summary. Inputs that cannot be read (``DataError``)
are reported one line each and skipped; anything else is a bug and stops the run."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.base import DataError
from ..data.images import display_name
from ..progress import progress_bar
from .outputs import RowWriter, VideoWriter, annotated_name, draw_faces, face_rows, write_image
from .recognizer import Recognizer
from .sources import VideoSource, check_video_options, expand_source, is_video_path, load_rgb, real_path

if TYPE_CHECKING:
    from rich.progress import Progress

IMAGE_CHUNK = 8  # images whose faces are classified in one batch


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


def check_outputs(inputs: list[Path], outputs: list[Path | None]) -> None:
    """Refuse output paths that are inputs or repeat each other (nothing may be written over an input)."""
    taken = {real_path(p) for p in inputs}
    for out in outputs:
        if out is None:
            continue
        if real_path(out) in taken:
            raise ValueError(f"{out}: output path is an input or another output; choose another path")
        if out.is_dir():
            raise ValueError(f"{out}: output path is a folder; give a file name")
        taken.add(real_path(out))


def chunks(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
    all_frames: bool = False
    summary: PredictSummary = field(default_factory=PredictSummary)

    def fail(self, source: str, exc: DataError) -> None:
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
            except DataError as exc:
                self.fail(display_name(path), exc)
        results = self.recognizer.predict_rgb([rgb for _, rgb in decoded])
        for (path, rgb), faces in zip(decoded, results):
            self.summary.frames += 1
            self.summary.faces += len(faces)
            self.rows.write(face_rows(display_name(path), 0, None, faces, self.all_frames))
            if self.out_dir is not None:
                target = annotated_name(path, False, self.out_dir, self.avoid)
                self.summary.outputs.append(str(write_image(target, draw_faces(rgb, faces))))

    def video(self, source: Path | int) -> None:
        """One video file or camera: rows per face per processed frame, and the annotated video if asked."""
        self.summary.files += 1
        name = f"camera:{source}" if isinstance(source, int) else display_name(source)
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
                        self.rows.write(face_rows(name, result.frame, result.time_s, result.faces, self.all_frames))
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
        except DataError as exc:
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
    all_frames: bool = False,
) -> PredictSummary:
    """Process ``source`` and write the outputs; returns the counts, failures and files written.
    ``all_frames`` writes a row (``face_detected`` false) for each processed frame or image without a face.

    Raises :class:`DataError` when ``source`` matches nothing and ``ValueError`` for unusable settings or
    output paths. Ctrl+C stops early and keeps what was written so far (the way to end a camera run).
    """
    check_video_options(every, smooth)
    inputs = expand_source(source)
    files = [] if isinstance(inputs, int) else inputs
    jsonl, csv_path = (None if p is None else Path(p) for p in (jsonl, csv_path))
    check_outputs(files, [jsonl, csv_path])
    out_dir = None if annotate_dir is None else Path(annotate_dir)
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: --save-annotated needs a folder")
    avoid = {real_path(p) for p in [*files, jsonl, csv_path] if p is not None}
    bar = progress_bar(enabled=progress)
    warn = warn or (lambda message: print(f"error: {message}", file=sys.stderr))
    with bar or nullcontext(), RowWriter(recognizer.class_names, jsonl, csv_path) as rows:
        run = PredictRun(recognizer, rows, out_dir, avoid, every, smooth, max_frames, bar, warn, all_frames)
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
