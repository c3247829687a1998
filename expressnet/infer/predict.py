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
from .options import PredictOptions
from .outputs import STDOUT, Record, RowSink, VideoWriter, annotated_name, draw_faces, frame_result, write_image
from .ray_engine import is_uri, ray_records
from .recognizer import Recognizer
from .sources import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    VideoSource,
    is_source_input,
    iter_source,
    real_path,
)
from .stream import Position, StreamResult, run_stream

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
        return text + self.resumed() + (" (interrupted)" if self.interrupted else "")

    def resumed(self) -> str:
        """Where a resumed run went on: inside a video (at which frame, after how many finished inputs), or after
        the inputs it found finished."""
        if self.resumed_in is not None:
            after = f", after {self.resumed_at} finished input(s)" if self.resumed_at else ""
            return f" (resumed in {self.resumed_in} at frame {self.resumed_frame}{after})"
        if self.resumed_at == 0:
            return " (resumed from the start: the interrupted run had committed nothing)"
        return "" if self.resumed_at is None else f" (resumed after {self.resumed_at} finished input(s))"


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


@dataclass
class Plan:
    """What a run reads and writes, checked before anything starts: a ``camera``, a ``remote`` URI (Ray), the
    ``single`` input file (outputs must not be it), the output paths and the annotated outputs' folder."""

    source: str | Path
    camera: bool
    remote: bool
    single: list[Path]
    jsonl: Path | None
    csv: Path | None
    parquet: Path | None
    out_dir: Path | None

    @property
    def files(self) -> list[Path]:
        """The output files (not standard output), in order."""
        return [p for p in (self.jsonl, self.csv, self.parquet) if p is not None and str(p) != STDOUT]

    @property
    def folder(self) -> str | Path | None:
        """The folder the results table shows sources relative to (a single file's own folder)."""
        if self.camera or self.remote or not Path(self.source).exists():
            return None
        return self.source if Path(self.source).is_dir() else Path(self.source).parent


def plan_run(source: str | Path, options: PredictOptions) -> Plan:
    """The :class:`Plan` of a run; raises ``DataError`` for no such source (or camera) and ``ValueError`` for
    unusable outputs or settings."""
    remote = options.engine == "ray" and is_uri(source)
    camera = not remote and isinstance(iter_source(source, options.recursive), int)  # raises for no such source
    if camera:
        VideoSource(iter_source(source, options.recursive)).close()  # a camera that cannot be opened: usage error
    jsonl, csv_path, parquet = (None if p is None else Path(p) for p in (options.jsonl, options.csv, options.parquet))
    single = [] if camera or Path(source).is_dir() or not Path(source).exists() else [Path(source)]
    check_outputs(single, [p for p in (jsonl, csv_path) if p is None or str(p) != STDOUT])
    if parquet is not None and real_path(parquet) in {real_path(p) for p in single}:
        raise ValueError(f"{parquet}: output path is an input; choose another path")
    out_dir = None if options.annotate_dir is None else Path(options.annotate_dir)
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: --save-annotated needs a folder")
    if options.engine == "ray" and (camera or out_dir is not None):
        raise ValueError("--engine ray takes files, folders, globs and lists (no camera, no --save-annotated)")
    if options.resume and camera:
        raise ValueError("--resume: a camera run cannot be resumed")
    return Plan(source, camera, remote, single, jsonl, csv_path, parquet, out_dir)


def resume_from(state: dict[str, Any] | None, summary: PredictSummary, plan: Plan, recursive: bool) -> Position:
    """The position a resumed run goes on from (the start without a journal), with the counts it found done
    carried into ``summary``."""
    if state is None or not state.get("position"):
        return Position()
    start = Position.from_dict(state["position"])
    counts = state["summary"]
    summary.files, summary.frames, summary.faces, summary.rows = (
        counts[k] for k in ("files", "frames", "faces", "rows")
    )
    summary.failures = dict(counts["failures"])
    summary.resumed_at = start.input
    summary.frames_before = summary.frames
    if start.video:  # inside a video: say which, and where
        name = next(itertools.islice(iter_source(plan.source, recursive), start.input, None), None)
        summary.resumed_in = display_name(name) if name is not None else f"input {start.input + 1}"
        summary.resumed_frame = int(start.video["next_frame"])
    return start


def engine_records(
    run: PredictRun, plan: Plan, recognizer: Recognizer, options: PredictOptions, start: Position
) -> Iterator[tuple[Record, bool, int | None, bool]]:
    """Each record of the chosen engine with what progress needs: is it a video, its expected frames, is it the
    input's last record."""
    if options.engine == "ray":
        paths = str(plan.source) if plan.remote else iter_source(plan.source, options.recursive)
        for record in ray_records(paths, options, start.input):
            yield record, False, None, True
        return
    stream_options = options.stream_options(keep_images=plan.out_dir is not None)
    results = run_stream(recognizer, plan.source, stream_options, options.recursive, start)
    for result, record in run.local_records(results):
        yield record, result.is_video, result.expected_frames, result.last


def open_sink(plan: Plan, recognizer: Recognizer, options: PredictOptions) -> tuple[RowSink, dict[str, Any] | None]:
    """The outputs opened: ones that exist refused, or cut back to the journal to resume (then with the journal's
    state)."""
    model = recognizer.provenance()
    sink = RowSink(
        recognizer.class_names,
        plan.jsonl,
        plan.csv,
        plan.parquet,
        settings={**options.settings(plan.source), "provenance": model},
        resume=options.resume,
        overwrite=options.overwrite,
        all_frames=options.all_frames,
        model=model,
        geometry=options.measures_geometry,
    )
    return sink, sink.open()


def new_run(
    plan: Plan,
    sink: RowSink,
    summary: PredictSummary,
    options: PredictOptions,
    warn: Callable[[str], None] | None,
    show: Callable[[str], None] | None,
) -> PredictRun:
    """The state the run shares across its inputs, with its progress display started."""
    outputs = [real_path(p) for p in [*plan.single, plan.jsonl, plan.csv] if p is not None and str(p) != STDOUT]
    avoid = Avoid(outputs, None if plan.camera or plan.remote else plan.source, options.recursive)
    warn = warn or (lambda message: print(f"error: {message}", file=sys.stderr))
    counter = None if plan.camera or plan.remote else count_inputs(plan.source, options.recursive)
    reporter = Reporter(options.progress, counter)
    run = PredictRun(sink, plan.out_dir, avoid, reporter, warn, options.all_frames, summary, every=options.every)
    run.model = summary.model
    run.table = None if show is None else ResultTable(show, plan.folder)
    return run


def run_predict(
    source: str | Path,
    recognizer: Recognizer | None = None,
    options: PredictOptions | None = None,
    *,
    warn: Callable[[str], None] | None = None,
    show: Callable[[str], None] | None = None,
) -> PredictSummary:
    """Process ``source`` with ``options`` (:class:`~expressnet.infer.options.PredictOptions`; ``recognizer``:
    built from them when None) and write the outputs as it goes; returns the counts, failures and files written.
    ``show`` takes the lines of a table of the results as they come (the CLI prints them when no output is
    given); ``warn`` each failure's message (default: stderr). Outputs that exist are refused unless
    ``overwrite`` or ``resume`` (continue an interrupted run: the same source and settings; see
    :class:`~expressnet.infer.outputs.RowSink`). ``engine="ray"`` classifies on a Ray cluster, with workers built
    from the same options.

    Raises :class:`DataError` when ``source`` matches nothing and ``ValueError`` for unusable settings or
    output paths. Ctrl+C stops early and keeps what was written so far (the way to end a camera run).
    """
    started = time.monotonic()
    options = options or PredictOptions()
    plan = plan_run(source, options)
    recognizer = recognizer or Recognizer(**options.recognizer_kwargs())
    sink, state = open_sink(plan, recognizer, options)
    summary = PredictSummary(model=recognizer.provenance(), outputs=[str(p) for p in plan.files])
    if state is not None and state.get("complete"):
        summary.complete = True
        return summary
    start = resume_from(state, summary, plan, options.recursive)
    run = new_run(plan, sink, summary, options, warn, show)
    run.position = start.to_dict()
    try:
        for record, is_video, expected, last in engine_records(run, plan, recognizer, options, start):
            run.consume(record, is_video, expected, last)
        run.close_video(None)
        summary.seconds = time.monotonic() - started
        sink.finish(None, summary.counts())
    except KeyboardInterrupt as exc:
        summary.interrupted = True
        run.close_video(exc)
        summary.seconds = time.monotonic() - started
        sink.finish(None, summary.counts()) if plan.camera else sink.close()  # files: the journal stays for --resume
    except BaseException as exc:
        run.close_video(exc)
        sink.close()
        raise
    finally:
        run.reporter.close()
    return summary
