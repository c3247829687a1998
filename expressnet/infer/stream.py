"""Streaming inference over inputs of any number and length, in order, with memory that stays flat:

    for result in recognizer.stream("photos/", recursive=True):   # or stream(recognizer, ...)
        result.source, result.frame, result.time_s, result.faces, result.error

Inputs are enumerated lazily (:func:`~expressnet.infer.sources.iter_source`); images are decoded and their
faces detected and cropped by a small pool of threads a bounded distance ahead of the consumer; the faces of a
chunk of images (or of video frames) are classified in one batch. One :class:`StreamResult` comes out per image
and per processed video frame, in input order. Chunks are fixed by the input order alone (a run of up to
``batch_size`` consecutive images; ``batch_size`` consecutive processed frames of a video), so a run resumed at
a chunk boundary (:class:`Position`, see ``result.commit``) classifies the same batches as one that was never
stopped and gives the same numbers.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..data.base import DataError
from ..data.images import display_name
from .sources import (
    VideoFrame,
    VideoSource,
    camera_index,
    check_video_options,
    is_video_path,
    iter_source,
    load_rgb,
)
from .tracking import FaceTracks, TrackedFace

BATCH_SIZE = 8  # images (or video frames) whose faces are classified in one batch
WORKERS = 2  # decoding/detection threads


@dataclass
class PreparedImage:
    """An image made ready for classification (by a worker thread, for images): its ``detections``, their model
    inputs (``crops``, N x C x S x S uint8) and, when the recognizer measures geometry, their face ``meshes``;
    ``image`` is the RGB image when kept, else a zero-size array of its height and width (what boxes are clipped
    to)."""

    image: np.ndarray
    detections: list
    crops: np.ndarray
    meshes: list | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.image.shape[1], self.image.shape[0]

    @property
    def kept_image(self) -> np.ndarray | None:
        return self.image if self.image.shape[-1] else None


class FaceModel(Protocol):
    """What the streaming pipeline needs of a recognizer (:class:`~expressnet.infer.recognizer.Recognizer` is
    one): ``prepare`` one decoded RGB image (find, crop and measure its faces; for images this runs on worker
    threads, so it must be thread-safe) and ``finish`` a chunk of prepared images (classify all their faces in one
    batch: one list of faces per image, in order)."""

    def prepare(self, rgb: np.ndarray, keep_image: bool = False) -> PreparedImage: ...

    def finish(self, prepared: Sequence[PreparedImage]) -> list[list[TrackedFace]]: ...


@dataclass(frozen=True)
class StreamOptions:
    """How a stream reads and batches: every ``every``-th video frame, at most ``max_frames`` per video,
    ``smooth`` (each track's probabilities, 0 < alpha <= 1), ``batch_size`` images or frames classified at a time,
    ``workers`` decoding/detection threads for images, ``keep_images`` (each result's ``image``)."""

    every: int = 1
    smooth: float | None = None
    max_frames: int | None = None
    batch_size: int = BATCH_SIZE
    workers: int = WORKERS
    keep_images: bool = False

    def __post_init__(self) -> None:
        check_video_options(self.every, self.smooth)
        if self.batch_size < 1 or self.workers < 1:
            raise ValueError(f"batch_size and workers must be >= 1, got {self.batch_size} and {self.workers}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")


@dataclass
class Position:
    """Where a stream stands between chunks: ``input`` inputs are finished; ``video`` is the state inside the
    next input when it is a video stopped between frame chunks (``next_frame`` index, frames ``processed``, and
    ``tracks``: the :meth:`FaceTracks.state_dict` of its track ids, smoothing and blinks). JSON-able
    (``to_dict``/``from_dict``), for a progress journal."""

    input: int = 0
    video: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "video": self.video}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Position:
        return cls(int(d["input"]), d.get("video"))


@dataclass
class StreamResult:
    """One image or processed video frame: its input's number (from 0) and name, frame and time (None for
    still images), faces, or the ``DataError`` that made the input unreadable (no faces then). ``first``: the
    first result of this input in this stream; ``last``: its last one. ``commit``: set at a chunk boundary, the
    position just after this result. ``image``: the RGB image, with ``keep_images``."""

    index: int
    source: str
    path: Path | None
    frame: int
    time_s: float | None
    faces: list = field(default_factory=list)
    error: DataError | None = None
    first: bool = True
    last: bool = True
    is_video: bool = False
    commit: Position | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    expected_frames: int | None = None  # videos: how many frames the whole video gives, when known
    fps: float | None = None  # videos: the source's frame rate (0: unknown)
    size: tuple[int, int] | None = None  # the image's or frame's (width, height)


def inputs_of(sources: str | Path | int | Iterable[str | Path], recursive: bool) -> Iterator[Path] | int:
    """A single source expanded lazily (a camera index stays an int), or an iterable of paths as they are."""
    if isinstance(sources, (str, Path, int)):
        return iter_source(sources, recursive) if not isinstance(sources, int) else sources
    return (Path(p) for p in sources)


def stream(
    model: FaceModel,
    sources: str | Path | int | Iterable[str | Path],
    *,
    recursive: bool = False,
    every: int = 1,
    smooth: float | None = None,
    max_frames: int | None = None,
    batch_size: int = BATCH_SIZE,
    workers: int = WORKERS,
    keep_images: bool = False,
    start: Position | None = None,
) -> Iterator[StreamResult]:
    """Results for every image and every ``every``-th video frame of ``sources`` (a file, folder, glob, list
    file or camera index, or an iterable of paths), in order; see the module docstring and :class:`StreamOptions`.
    ``start`` resumes at a :class:`Position` a previous stream committed (the same sources and settings). Raises
    ``DataError`` when a single source does not exist or matches nothing; unreadable inputs come out as results
    with ``error``."""
    options = StreamOptions(every, smooth, max_frames, batch_size, workers, keep_images)
    return run_stream(model, sources, options, recursive, start)


def run_stream(
    model: FaceModel,
    sources: str | Path | int | Iterable[str | Path],
    options: StreamOptions,
    recursive: bool = False,
    start: Position | None = None,
) -> Iterator[StreamResult]:
    """:func:`stream` with its settings as one :class:`StreamOptions`."""
    inputs = inputs_of(sources, recursive)
    position = start or Position()
    if isinstance(inputs, int):
        if position.input or position.video:
            raise ValueError("a camera stream cannot be resumed")
        yield from video_results(model, 0, inputs, options)
        return
    yield from input_results(model, itertools.islice(enumerate(inputs), position.input, None), options, position)


def input_results(
    model: FaceModel, numbered: Iterator[tuple[int, Path]], options: StreamOptions, position: Position
) -> Iterator[StreamResult]:
    """The results of numbered inputs: images in chunks prepared by the worker threads, videos in between."""
    with ThreadPoolExecutor(options.workers, thread_name_prefix="expressnet-decode") as pool:
        # chunks of images submitted to the pool: the one being filled and one ahead are decoded while the
        # oldest is classified, so at most about 3 x batch_size images are held
        chunks: deque[list[tuple[int, Path, Future]]] = deque([[]])
        for index, path in numbered:
            if is_video_path(path):
                while chunks:
                    yield from image_results(model, chunks.popleft())
                chunks.append([])
                state = position.video if index == position.input else None
                yield from video_results(model, index, path, options, state)
                continue
            chunks[-1].append((index, path, pool.submit(prepare_file, model, path, options.keep_images)))
            if len(chunks[-1]) == options.batch_size:
                chunks.append([])
                if len(chunks) > 2:
                    yield from image_results(model, chunks.popleft())
        while chunks:
            yield from image_results(model, chunks.popleft())


def prepare_file(model: FaceModel, path: Path, keep_image: bool) -> PreparedImage:
    return model.prepare(load_rgb(path), keep_image)


def image_results(model: FaceModel, pending: list[tuple[int, Path, Future]]) -> Iterator[StreamResult]:
    """The results of one chunk of images (faces classified in one batch); the last one commits the position
    after the chunk."""
    if not pending:
        return
    prepared: list[PreparedImage | DataError] = []
    for _, _, future in pending:
        try:
            prepared.append(future.result())
        except DataError as exc:
            prepared.append(exc)
    faces = iter(model.finish([p for p in prepared if isinstance(p, PreparedImage)]))
    end = pending[-1][0] + 1
    for n, ((index, path, _), item) in enumerate(zip(pending, prepared)):
        commit = Position(end) if n == len(pending) - 1 else None
        name = display_name(path)
        if isinstance(item, DataError):
            yield StreamResult(index, name, path, 0, None, error=item, commit=commit)
            continue
        yield StreamResult(
            index, name, path, 0, None, next(faces), commit=commit, image=item.kept_image, size=item.size
        )


def read_ahead(frames: Iterable[VideoFrame], size: int) -> Iterator[VideoFrame]:
    """``frames`` decoded by a thread at most ``size`` frames ahead (OpenCV decodes outside the GIL)."""
    box: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for frame in frames:
                while not stop.is_set():
                    try:
                        box.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put((done, None))
        except BaseException as exc:  # handed to the consumer
            box.put((done, exc))

    thread = threading.Thread(target=produce, name="expressnet-video", daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if isinstance(item, tuple) and item[0] is done:
                if item[1] is not None:
                    raise item[1]
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                box.get(timeout=0.1)
            except queue.Empty:
                continue
        thread.join()


def video_results(
    model: FaceModel, index: int, source: Path | int, options: StreamOptions, state: dict[str, Any] | None = None
) -> Iterator[StreamResult]:
    """The results of one video file or camera, ``batch_size`` frames classified at a time; each chunk's last
    frame commits the state inside the video (next frame, frames processed, tracks), the video's last frame the
    position after it. ``state`` resumes inside the video (a :class:`Position`'s ``video``). A video that cannot
    be read is one result with ``error``."""
    camera = camera_index(source)
    name = f"camera:{camera}" if camera is not None else display_name(source)
    path = None if camera is not None else Path(source)
    at = (index, name, path)
    tracks = FaceTracks(options.smooth)
    start, processed = 0, 0
    if state is not None:
        start, processed = int(state["next_frame"]), int(state["processed"])
        tracks.load_state_dict(state["tracks"])
    first = state is None
    held: list[StreamResult] = []  # the last chunk, yielded once it is known whether another follows
    try:
        with (
            VideoSource(source, options.every, options.max_frames, start=start, processed=processed) as video,
            closing(read_ahead(video, 2 * options.batch_size)) as frames,
        ):
            while chunk := list(itertools.islice(frames, options.batch_size)):
                yield from held
                processed += len(chunk)
                held = []
                about = {"is_video": True, "last": False, "expected_frames": video.expected_frames, "fps": video.fps}
                for frame, faces, size in frame_chunk(model, chunk, tracks, options.keep_images):
                    held.append(StreamResult(*at, frame.index, frame.time_s, faces, first=first, **about))
                    held[-1].image, held[-1].size = frame.image, size
                    first = False
                if camera is None:
                    after = {"next_frame": chunk[-1].index + 1, "processed": processed, "tracks": tracks.state_dict()}
                    held[-1].commit = Position(index, after)
    except DataError as exc:
        yield from held
        yield StreamResult(
            index, name, path, 0, None, error=exc, first=first, is_video=True, commit=Position(index + 1)
        )
        return
    if held:
        held[-1].last, held[-1].commit = True, Position(index + 1)
    yield from held


def frame_chunk(
    model: FaceModel, frames: list[VideoFrame], tracks: FaceTracks, keep_images: bool
) -> Iterator[tuple[VideoFrame, list, tuple[int, int]]]:
    """Prepare every frame, classify all their faces in one batch, then track (smooth, count blinks) frame by
    frame; each frame comes with its faces and (width, height) (its ``image`` dropped unless ``keep_images``)."""
    prepared = [model.prepare(f.image, keep_images) for f in frames]
    for frame, item, faces in zip(frames, prepared, model.finish(prepared)):
        if not keep_images:
            frame.image = None
        yield frame, tracks.update(faces, frame.time_s), item.size


def frame_results(
    model: FaceModel, frames: Iterable[VideoFrame], tracks: FaceTracks, batch_size: int = 1, keep_images: bool = True
) -> Iterator[tuple[VideoFrame, list, tuple[int, int]]]:
    """:func:`frame_chunk` over frames from any source, ``batch_size`` at a time, as they come (a live feed may
    pause between frames: each chunk is what the iterator gave before it paused or ``batch_size`` frames)."""
    frames = iter(frames)
    while chunk := list(itertools.islice(frames, batch_size)):
        yield from frame_chunk(model, chunk, tracks, keep_images)
