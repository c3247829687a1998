"""``expressnet predict``: run a :class:`Recognizer` over an image, folder, glob, list file, video file or camera
and show the results as a table, or write them (JSONL frame results, CSV/Parquet flat rows; ``-``: standard
output), with annotated images/videos and a summary, as a stream: inputs are enumerated lazily, results are
written as they come and a progress journal makes a killed run resumable (``resume``).
Inputs that cannot be read (``DataError``) are reported one line each and skipped; anything else is a bug and
stops the run (its journal kept: it can be resumed once fixed)."""

from __future__ import annotations

import itertools
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
from ..data.images import display_name
from ..progress import progress_bar
from .outputs import STDOUT, Record, RowSink, VideoWriter, annotated_name, draw_faces, frame_result, write_image
from .ray_engine import is_uri, ray_records
from .recognizer import Recognizer
from .sources import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    VideoSource,
    check_video_options,
    is_source_input,
    iter_source,
    real_path,
)
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
    resumed_in: str | None = None  # the input a resumed run went on inside (a video), if any
    resumed_frame: int | None = None  # and the frame it went on from
    complete: bool = False  # resume found the outputs finished: nothing was done
    frames_before: int = 0  # frames a resumed run found done
    model: dict[str, Any] | None = None  # the classifier's provenance

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
        if self.model:
            m = self.model
            text += f"; model {m['name']} ({m['sha256']}, {m['backend']} {m['precision']})"
        if self.resumed_in is not None:
            text += f" (resumed after {self.resumed_at} input(s), in {self.resumed_in} at frame {self.resumed_frame})"
        elif self.resumed_at is not None:
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


class ResultTable:
    """The results on the terminal, as they come: one line per face (source, frame and time for videos, face, box,
    emotion and its probability, the runner-up) and one per image or frame without a face."""

    SOURCE = 32  # characters of the source shown (its end, where the file name is)

    def __init__(self, write: Callable[[str], None], folder: str | Path | None = None) -> None:
        self.write = write
        self.header = False
        self.folder = None if folder is None else f"{str(folder).rstrip('/')}/"  # sources shown relative to it

    def line(self, *cells: str) -> str:
        source, frame, time_s, face, box, emotion, p, runner_up = cells
        return (
            f"{source:<{self.SOURCE}} {frame:>6} {time_s:>9} {face:>4}  {box:<17} {emotion:<9} {p:>5}  {runner_up}"
        ).rstrip()

    def add(self, result: dict[str, Any]) -> None:
        if not self.header:
            self.header = True
            self.write(self.line("source", "frame", "time", "face", "box x,y,w,h", "emotion", "p", "runner-up"))
        source = str(result["source"])
        if self.folder is not None and source.startswith(self.folder):
            source = source[len(self.folder) :]
        if len(source) > self.SOURCE:
            source = "…" + source[-(self.SOURCE - 1) :]
        video = result["time_s"] is not None
        frame = str(result["frame"]) if video else "-"
        time_s = f"{result['time_s']:.2f} s" if video else "-"
        if not result["faces"]:
            self.write(self.line(source, frame, time_s, "-", "no face", "", "", ""))
        for index, face in enumerate(result["faces"]):
            ranked = sorted(face["probabilities"].items(), key=lambda kv: -kv[1])
            second = f"{ranked[1][0]} {ranked[1][1]:.2f}" if len(ranked) > 1 else ""
            box = ",".join(str(v) for v in face["box"])
            p = f"{face['probabilities'][face['emotion']]:.2f}"
            self.write(self.line(source, frame, time_s, str(index), box, face["emotion"], p, second))


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
    table: ResultTable | None = None  # the results on the terminal (no output option given)
    model: dict[str, Any] | None = None  # the classifier's provenance, in every result

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
        s.rows += self.sink.write(record.results)
        if self.table is not None:
            for result in record.results:
                self.table.add(result)
        self.reporter.advance(record, is_video, expected, last)
        if record.commit is not None and self.sink.commit(record.commit, s.counts()):
            self.position = record.commit

    def local_records(self, results: Iterable[StreamResult]) -> Iterator[tuple[StreamResult, Record]]:
        """Stream results as records, writing the annotated images and videos on the way."""
        for result in results:
            if result.path is not None and real_path(result.path) in self.written:
                continue  # an annotated image this run wrote where the inputs are
            results = []
            if result.error is None:
                time_s = result.time_s if result.is_video else None
                results = [frame_result(result.source, result.frame, time_s, result.faces, result.size, self.model)]
            commit = None if result.commit is None else result.commit.to_dict()
            if self.out_dir is not None:
                self.annotate(result)
                if result.is_video and not result.last:
                    commit = None  # an annotated video is redone whole: no resuming inside it
            frames = 0 if result.error else 1
            error = None if result.error is None else str(result.error)
            yield (
                result,
                Record(result.index, result.source, results, frames, len(result.faces), error, result.first, commit),
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
    show: Callable[[str], None] | None = None,
) -> PredictSummary:
    """Process ``source`` and write the outputs as it goes; returns the counts, failures and files written.
    ``jsonl`` or ``csv_path`` may be ``-`` (standard output). ``show`` takes the lines of a table of the results
    as they come (the CLI prints them when no output is given). ``all_frames`` writes a flat row
    (``face_detected`` false) for each processed frame or image without a face (JSON lines have every frame).
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
    if camera:
        VideoSource(iter_source(source, recursive)).close()  # a camera that cannot be opened is a usage error
    jsonl, csv_path, parquet = (None if p is None else Path(p) for p in (jsonl, csv_path, parquet))
    single = [] if camera or Path(source).is_dir() or not Path(source).exists() else [Path(source)]
    check_outputs(single, [p for p in (jsonl, csv_path) if p is None or str(p) != STDOUT])
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
    model = recognizer.provenance()
    run_settings.update(max_frames=max_frames, all_frames=all_frames, **(settings or {}), provenance=model)
    sink = RowSink(
        recognizer.class_names,
        jsonl,
        csv_path,
        parquet,
        settings=run_settings,
        resume=resume,
        overwrite=overwrite,
        all_frames=all_frames,
        model=model,
    )
    state = sink.open()
    summary = PredictSummary(model=model)
    summary.outputs = [str(p) for p in (jsonl, csv_path, parquet) if p is not None and str(p) != STDOUT]
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
        if start.video:  # inside a video: say which, and where
            name = next(itertools.islice(iter_source(source, recursive), start.input, None), None)
            summary.resumed_in = display_name(name) if name is not None else f"input {start.input + 1}"
            summary.resumed_frame = int(start.video["next_frame"])
    outputs = [real_path(p) for p in [*single, jsonl, csv_path] if p is not None and str(p) != STDOUT]
    avoid = Avoid(outputs, None if camera or remote else source, recursive)
    warn = warn or (lambda message: print(f"error: {message}", file=sys.stderr))
    reporter = Reporter(progress, None if camera or remote else count_inputs(source, recursive))
    run = PredictRun(sink, out_dir, avoid, reporter, warn, all_frames, summary, every=every, model=model)
    folder = None  # the table shows sources relative to the folder given, or a single file by its name
    if not camera and not remote and Path(source).exists():
        folder = source if Path(source).is_dir() else Path(source).parent
    run.table = None if show is None else ResultTable(show, folder)
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
