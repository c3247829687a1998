"""``expressnet predict``: run a :class:`Recognizer` over an image, folder, glob, list file, video file or camera
and write rows (JSONL/CSV/Parquet), annotated images/videos and a summary, as a stream: inputs are enumerated
lazily, rows are appended as they come and a progress journal makes a killed run resumable (``resume``).
Inputs that cannot be read (``DataError``) are reported one line each and skipped; anything else is a bug and
stops the run (its journal kept: it can be resumed once fixed)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress, ProgressColumn, Task
from rich.text import Text

from ..data.base import DataError
from ..progress import progress_bar
from .outputs import Record, RowSink, VideoWriter, annotated_name, draw_faces, face_rows, write_image
from .ray_engine import is_uri, ray_records
from .recognizer import Recognizer
from .sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES, check_video_options, is_source_input, iter_source, real_path
from .stream import BATCH_SIZE, WORKERS, Position, StreamResult, stream

IMAGE_CHUNK = BATCH_SIZE  # images whose faces are classified in one batch
LOG_SECONDS = 30.0  # without a terminal, a progress line this often


@dataclass
class PredictSummary:
    files: int = 0  # inputs attempted: image files, video files, cameras
    frames: int = 0  # processed frames; a still image counts as one
    faces: int = 0
    rows: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # input -> error message
    outputs: list[str] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0  # wall time of this run (a resumed run: of its last part)
    resumed_at: int | None = None  # inputs a resumed run found done
    complete: bool = False  # resume found the outputs finished: nothing was done
    frames_before: int = 0  # frames a resumed run found done

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def counts(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("files", "frames", "faces", "rows", "failures")}

    def line(self) -> str:
        """The closing line: counts, failures, time and throughput (of this run: a resumed one's part)."""
        done = self.frames - self.frames_before
        rate = f", {done / self.seconds:.1f} frames/s" if self.seconds > 0 and done else ""
        text = (
            f"{self.files} file(s), {self.frames} frame(s), {self.faces} face(s), {len(self.failures)} failure(s)"
            f" in {self.seconds:.1f} s{rate}"
        )
        if self.resumed_at is not None:
            text += f" (resumed after {self.resumed_at} input(s))"
        return text + (" (interrupted)" if self.interrupted else "")


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
        if out.exists() and out.suffix.lower() in (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES):
            raise ValueError(f"{out}: output path is an image or video (an input?); choose another path")


class RateColumn(ProgressColumn):
    """Throughput of a task: items per second."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.1f}/s" if task.speed else "", style="progress.data.speed")


class Reporter:
    """Progress of a long job: rich bars on a terminal (inputs, with throughput and time left once a background
    count of the inputs is done; one bar per video), else a line on stderr every ``LOG_SECONDS``."""

    def __init__(self, enabled: bool, count: Callable[[], int] | None) -> None:
        self.enabled = enabled
        self.bar: Progress | None = progress_bar(RateColumn(), enabled=enabled)
        self.total: int | None = None
        self.done = self.frames = 0
        self.started = self.logged = time.monotonic()
        self.task = self.video = None
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task("inputs", total=None)
        if enabled and count is not None:
            threading.Thread(target=self.count, args=(count,), name="expressnet-count", daemon=True).start()

    def count(self, count: Callable[[], int]) -> None:
        try:
            self.total = count()
        except (DataError, OSError):
            return
        if self.bar is not None:
            self.bar.update(self.task, total=self.total)

    def advance(self, record: Record, is_video: bool, expected: int | None, last: bool) -> None:
        self.frames += record.frames
        if self.bar is not None and is_video and record.first:
            self.video = self.bar.add_task(Path(record.source).name, total=expected)
        if self.bar is not None and self.video is not None and record.frames:
            self.bar.advance(self.video)
        if last:
            self.done += 1
            if self.bar is not None:
                self.bar.advance(self.task)
                if self.video is not None:
                    self.bar.remove_task(self.video)
                    self.video = None
        now = time.monotonic()
        if self.bar is None and self.enabled and now - self.logged >= LOG_SECONDS:
            self.logged = now
            print(self.status(now), file=sys.stderr, flush=True)

    def status(self, now: float) -> str:
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"progress: {self.done:,}" + (f" of {self.total:,}" if self.total else "") + " input(s)"
        text += f", {self.frames:,} frame(s), {rate:.1f} inputs/s, {self.frames / max(elapsed, 1e-9):.1f} frames/s"
        if self.total and rate > 0:
            left = (self.total - self.done) / rate
            text += f", ETA {int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}"
        return text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class Avoid(set):
    """The paths no output may take: those chosen so far, and any existing one that is an input of the source
    (known without enumerating it)."""

    def __init__(self, paths: Iterable[Path], source: str | Path | None, recursive: bool) -> None:
        super().__init__(paths)
        self.source, self.recursive = source, recursive

    def __contains__(self, path: object) -> bool:
        if super().__contains__(path):
            return True
        return self.source is not None and is_source_input(path, self.source, self.recursive)


@dataclass
class PredictRun:
    """The state one run shares across its inputs: settings, the row sink, progress, counts."""

    sink: RowSink
    out_dir: Path | None
    avoid: set[Path]  # paths no output may take: the inputs and the outputs chosen so far
    reporter: Reporter
    warn: Callable[[str], None]
    all_frames: bool = False
    summary: PredictSummary = field(default_factory=PredictSummary)
    written: set[Path] = field(default_factory=set)  # annotated outputs of this run (never taken as inputs)
    video_writer: VideoWriter | None = None
    every: int = 1
    position: dict[str, Any] | None = None  # the last committed position

    def fail(self, source: str, message: str) -> None:
        message = message if source in message else f"{source}: {message}"
        self.summary.failures[source] = message
        self.warn(message)

    def consume(self, record: Record, is_video: bool = False, expected: int | None = None, last: bool = True) -> None:
        """Count, write and (at chunk ends) commit one record."""
        s = self.summary
        s.files += record.first
        if record.error is not None:
            self.fail(record.source, record.error)
        s.frames += record.frames
        s.faces += record.faces
        self.sink.write(record.rows)
        s.rows += len(record.rows)
        self.reporter.advance(record, is_video, expected, last)
        if record.commit is not None and self.sink.commit(record.commit, s.counts()):
            self.position = record.commit

    def local_records(self, results: Iterable[StreamResult]) -> Iterator[tuple[StreamResult, Record]]:
        """Stream results as records, writing the annotated images and videos on the way."""
        for result in results:
            if result.path is not None and real_path(result.path) in self.written:
                continue  # an annotated image this run wrote where the inputs are
            rows = [] if result.error else face_rows(result.source, result.frame, result.time_s, result.faces)
            if result.error is None and not result.faces and self.all_frames:
                rows = face_rows(result.source, result.frame, result.time_s, [], True)
            commit = None if result.commit is None else result.commit.to_dict()
            if self.out_dir is not None:
                self.annotate(result)
                if result.is_video and not result.last:
                    commit = None  # an annotated video is redone whole: no resuming inside it
            frames = 0 if result.error else 1
            error = None if result.error is None else str(result.error)
            yield (
                result,
                Record(result.index, result.source, rows, frames, len(result.faces), error, result.first, commit),
            )

    def annotate(self, result: StreamResult) -> None:
        if result.error is not None or result.image is None:
            if result.last and self.video_writer is not None:
                self.close_video(None)
            return
        if not result.is_video:
            target = annotated_name(result.path, False, self.out_dir, self.avoid)
            self.written.add(real_path(target))
            self.summary.outputs.append(str(write_image(target, draw_faces(result.image, result.faces))))
            return
        if self.video_writer is None:
            name = Path(result.source.replace(":", ""))
            target = annotated_name(name, True, self.out_dir, self.avoid)
            self.video_writer = VideoWriter(target, (result.fps or 30.0) / self.every).__enter__()
        self.video_writer.write(draw_faces(result.image, result.faces))
        if result.last:
            self.close_video(None)

    def close_video(self, exc: BaseException | None) -> None:
        writer, self.video_writer = self.video_writer, None
        if writer is None:
            return
        if exc is None:
            writer.__exit__(None, None, None)
            if writer.path.exists():
                self.summary.outputs.append(str(writer.path))
        else:
            writer.__exit__(type(exc), exc, exc.__traceback__)


def count_inputs(source: str | Path, recursive: bool) -> Callable[[], int]:
    return lambda: sum(1 for _ in iter_source(source, recursive))


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
    *,
    parquet: str | Path | None = None,
    recursive: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    settings: dict[str, Any] | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    num_workers: int | None = None,
    recognizer_spec: dict[str, Any] | None = None,
    batch_size: int = BATCH_SIZE,
    workers: int = WORKERS,
) -> PredictSummary:
    """Process ``source`` and write the outputs as it goes; returns the counts, failures and files written.
    ``all_frames`` writes a row (``face_detected`` false) for each processed frame or image without a face.
    Outputs that exist are refused unless ``overwrite`` or ``resume`` (continue an interrupted run: the same
    source and ``settings``; see :class:`~expressnet.infer.outputs.RowSink`). ``engine="ray"`` classifies on a
    Ray cluster (``ray_address``; ``num_workers`` recognizers built from ``recognizer_spec``).

    Raises :class:`DataError` when ``source`` matches nothing and ``ValueError`` for unusable settings or
    output paths. Ctrl+C stops early and keeps what was written so far (the way to end a camera run).
    """
    started = time.monotonic()
    check_video_options(every, smooth)
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be local or ray, got {engine!r}")
    remote = engine == "ray" and is_uri(source)
    camera = not remote and isinstance(iter_source(source, recursive), int)  # raises for no such source
    jsonl, csv_path, parquet = (None if p is None else Path(p) for p in (jsonl, csv_path, parquet))
    single = [] if camera or Path(source).is_dir() or not Path(source).exists() else [Path(source)]
    check_outputs(single, [jsonl, csv_path])
    if parquet is not None and real_path(parquet) in {real_path(p) for p in single}:
        raise ValueError(f"{parquet}: output path is an input; choose another path")
    out_dir = None if annotate_dir is None else Path(annotate_dir)
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: --save-annotated needs a folder")
    if engine == "ray" and (camera or out_dir is not None):
        raise ValueError("--engine ray takes files, folders, globs and lists (no camera, no --save-annotated)")
    if resume and camera:
        raise ValueError("--resume: a camera run cannot be resumed")
    run_settings = {"source": str(source), "recursive": recursive, "every": every, "smooth": smooth}
    run_settings.update(max_frames=max_frames, all_frames=all_frames, **(settings or {}))
    sink = RowSink(
        recognizer.class_names, jsonl, csv_path, parquet, settings=run_settings, resume=resume, overwrite=overwrite
    )
    state = sink.open()
    summary = PredictSummary()
    summary.outputs = [str(p) for p in (jsonl, csv_path, parquet) if p is not None]
    if state is not None and state.get("complete"):
        summary.complete = True
        return summary
    start = Position()
    if state is not None and state.get("position"):
        start = Position.from_dict(state["position"])
        counts = state["summary"]
        summary.files, summary.frames, summary.faces, summary.rows = (
            counts[k] for k in ("files", "frames", "faces", "rows")
        )
        summary.failures = dict(counts["failures"])
        summary.resumed_at = start.input
        summary.frames_before = summary.frames
    outputs = [real_path(p) for p in [*single, jsonl, csv_path] if p is not None]
    avoid = Avoid(outputs, None if camera or remote else source, recursive)
    warn = warn or (lambda message: print(f"error: {message}", file=sys.stderr))
    reporter = Reporter(progress, None if camera or remote else count_inputs(source, recursive))
    run = PredictRun(sink, out_dir, avoid, reporter, warn, all_frames, summary, every=every)
    run.position = start.to_dict()
    try:
        if engine == "ray":
            paths = str(source) if remote else iter_source(source, recursive)
            records = ray_records(
                paths,
                recognizer_spec or {},
                start.input,
                every,
                smooth,
                max_frames,
                all_frames,
                batch_size=batch_size,
                address=ray_address,
                num_workers=num_workers,
            )
            for record in records:
                run.consume(record)
        else:
            results = stream(
                recognizer,
                source,
                recursive=recursive,
                every=every,
                smooth=smooth,
                max_frames=max_frames,
                batch_size=batch_size,
                workers=workers,
                keep_images=out_dir is not None,
                start=start,
            )
            for result, record in run.local_records(results):
                run.consume(record, result.is_video, result.expected_frames, result.last)
        run.close_video(None)
        summary.seconds = time.monotonic() - started
        sink.finish(None, summary.counts())
    except KeyboardInterrupt as exc:
        summary.interrupted = True
        run.close_video(exc)
        summary.seconds = time.monotonic() - started
        sink.finish(None, summary.counts()) if camera else sink.close()  # files: the journal stays for --resume
    except BaseException as exc:
        run.close_video(exc)
        sink.close()
        raise
    finally:
        reporter.close()
    return summary
