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
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.base import DataError
from ..data.images import display_name
from .smoothing import ProbabilitySmoother
from .sources import VideoFrame, VideoSource, check_video_options, is_video_path, iter_source, load_rgb
from .tracking import IoUTracker

if TYPE_CHECKING:
    from .recognizer import Face, Recognizer

BATCH_SIZE = 8  # images (or video frames) whose faces are classified in one batch
WORKERS = 2  # decoding/detection threads


@dataclass
class Position:
    """Where a stream stands between chunks: ``input`` inputs are finished; ``video`` is the state inside the
    next input when it is a video stopped between frame chunks (next frame index, frames processed, tracker and
    smoother). JSON-able (``to_dict``/``from_dict``), for a progress journal."""

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
    faces: list[Face] = field(default_factory=list)
    error: DataError | None = None
    first: bool = True
    last: bool = True
    is_video: bool = False
    commit: Position | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    expected_frames: int | None = None  # videos: how many frames the whole video gives, when known
    fps: float | None = None  # videos: the source's frame rate (0: unknown)
    size: tuple[int, int] | None = None  # the image's or frame's (width, height)


@dataclass
class Prepared:
    """An image decoded, its faces found and cropped (by a worker thread); ``image`` only when kept, else a
    zero-size array of the image's height and width (what the boxes are clipped to)."""

    image: np.ndarray
    detections: list
    crops: np.ndarray


def inputs_of(sources: str | Path | int | Iterable[str | Path], recursive: bool) -> Iterator[Path] | int:
    """A single source expanded lazily (a camera index stays an int), or an iterable of paths as they are."""
    if isinstance(sources, (str, Path, int)):
        return iter_source(sources, recursive) if not isinstance(sources, int) else sources
    return (Path(p) for p in sources)


def stream(
    recognizer: Recognizer,
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
    file or camera index, or an iterable of paths), in order; see the module docstring. ``start`` resumes at a
    :class:`Position` a previous stream committed (the same sources and settings). Raises ``DataError`` when a
    single source does not exist or matches nothing; unreadable inputs come out as results with ``error``."""
    check_video_options(every, smooth)
    if batch_size < 1 or workers < 1:
        raise ValueError(f"batch_size and workers must be >= 1, got {batch_size} and {workers}")
    inputs = inputs_of(sources, recursive)
    position = start or Position()
    if isinstance(inputs, int):
        if position.input or position.video:
            raise ValueError("a camera stream cannot be resumed")
        yield from video_results(recognizer, 0, inputs, every, smooth, max_frames, batch_size, keep_images)
        return
    numbered = itertools.islice(enumerate(inputs), position.input, None)
    with ThreadPoolExecutor(workers, thread_name_prefix="expressnet-decode") as pool:
        # chunks of images submitted to the pool: the one being filled and one ahead are decoded while the
        # oldest is classified, so at most about 3 x batch_size images are held
        chunks: deque[list[tuple[int, Path, Future]]] = deque([[]])
        for index, path in numbered:
            if is_video_path(path):
                while chunks:
                    yield from image_results(recognizer, chunks.popleft())
                chunks.append([])
                state = position.video if index == position.input else None
                yield from video_results(
                    recognizer, index, path, every, smooth, max_frames, batch_size, keep_images, state
                )
                continue
            chunks[-1].append((index, path, pool.submit(prepare, recognizer, path, keep_images)))
            if len(chunks[-1]) == batch_size:
                chunks.append([])
                if len(chunks) > 2:
                    yield from image_results(recognizer, chunks.popleft())
        while chunks:
            yield from image_results(recognizer, chunks.popleft())


def prepare(recognizer: Recognizer, path: Path, keep_image: bool) -> Prepared:
    rgb = load_rgb(path)
    detections = recognizer.detect(rgb)
    crops = recognizer.crops([rgb], [detections])
    image = rgb if keep_image else np.empty((*rgb.shape[:2], 0), np.uint8)
    return Prepared(image, detections, crops)


def image_results(recognizer: Recognizer, pending: list[tuple[int, Path, Future]]) -> Iterator[StreamResult]:
    """The results of one chunk of images (faces classified in one batch); the last one commits the position
    after the chunk."""
    if not pending:
        return
    prepared: list[Prepared | DataError] = []
    for _, _, future in pending:
        try:
            prepared.append(future.result())
        except DataError as exc:
            prepared.append(exc)
    ok = [p for p in prepared if isinstance(p, Prepared)]
    crops = [p.crops for p in ok if len(p.crops)]
    probabilities = iter(recognizer.classifier.probabilities(np.concatenate(crops)) if crops else [])
    end = pending[-1][0] + 1
    for n, ((index, path, _), item) in enumerate(zip(pending, prepared)):
        commit = Position(end) if n == len(pending) - 1 else None
        name = display_name(path)
        if isinstance(item, DataError):
            yield StreamResult(index, name, path, 0, None, error=item, commit=commit)
            continue
        faces = [recognizer.make_face(d, next(probabilities), item.image) for d in item.detections]
        image = item.image if item.image.shape[-1] else None
        size = (item.image.shape[1], item.image.shape[0])
        yield StreamResult(index, name, path, 0, None, faces, commit=commit, image=image, size=size)


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


def tracker_state(tracker: IoUTracker, smoother: ProbabilitySmoother | None) -> dict[str, Any]:
    return {
        "next_id": tracker.next_id,
        "tracks": [[k, box.tolist(), missed] for k, (box, missed) in tracker.tracks.items()],
        "smoother": None if smoother is None else [[k, v.tolist()] for k, v in smoother.state.items()],
    }


def restore_tracker(state: dict[str, Any], tracker: IoUTracker, smoother: ProbabilitySmoother | None) -> None:
    tracker.next_id = int(state["next_id"])
    tracker.tracks = {int(k): (np.array(box, dtype=np.float64), int(m)) for k, box, m in state["tracks"]}
    if smoother is not None and state.get("smoother") is not None:
        smoother.state = {int(k): np.array(v, dtype=np.float64) for k, v in state["smoother"]}


def video_results(
    recognizer: Recognizer,
    index: int,
    source: Path | int,
    every: int,
    smooth: float | None,
    max_frames: int | None,
    batch_size: int,
    keep_images: bool,
    state: dict[str, Any] | None = None,
) -> Iterator[StreamResult]:
    """The results of one video file or camera, ``batch_size`` frames classified at a time; each chunk's last
    frame commits the state inside the video (tracks, smoothing, next frame), the video's last frame the
    position after it. A video that cannot be read is one result with ``error``."""
    name = f"camera:{source}" if isinstance(source, int) else display_name(source)
    path = None if isinstance(source, int) else source
    tracker = IoUTracker()
    smoother = ProbabilitySmoother(smooth) if smooth is not None else None
    start, processed = 0, 0
    if state is not None:
        start, processed = int(state["next_frame"]), int(state["processed"])
        restore_tracker(state, tracker, smoother)
    first = state is None
    held: list[StreamResult] = []  # the last chunk, yielded once it is known whether another follows
    try:
        with (
            VideoSource(source, every, max_frames, start=start, processed=processed) as video,
            closing(read_ahead(video, 2 * batch_size)) as frames,
        ):
            while chunk := list(itertools.islice(frames, batch_size)):
                yield from held
                processed += len(chunk)
                held = []
                for frame, faces, size in frame_chunk(recognizer, chunk, tracker, smoother, keep_images):
                    held.append(
                        StreamResult(
                            index,
                            name,
                            path,
                            frame.index,
                            frame.time_s,
                            faces,
                            first=first,
                            last=False,
                            is_video=True,
                            image=frame.image,
                            expected_frames=video.expected_frames,
                            fps=video.fps,
                            size=size,
                        )
                    )
                    first = False
                if not isinstance(source, int):
                    after = {"next_frame": chunk[-1].index + 1, "processed": processed}
                    held[-1].commit = Position(index, {**after, **tracker_state(tracker, smoother)})
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
    recognizer: Recognizer,
    frames: list[VideoFrame],
    tracker: IoUTracker,
    smoother: ProbabilitySmoother | None,
    keep_images: bool,
) -> Iterator[tuple[VideoFrame, list[Face], tuple[int, int]]]:
    """Detect every frame, classify all their faces in one batch, then track (and smooth) frame by frame; each
    frame comes with its faces and (width, height)."""
    detections = [recognizer.detect(f.image) for f in frames]
    images = [f.image for f in frames]
    probabilities = iter(recognizer.classify(images, detections))
    for frame, found in zip(frames, detections):
        faces = [recognizer.make_face(d, next(probabilities), frame.image) for d in found]
        track_ids = tracker.update([f.box for f in faces])
        faces = [replace(f, track_id=t) for f, t in zip(faces, track_ids)]
        if smoother is not None:
            faces = [recognizer.smoothed(f, smoother) for f in faces]
            smoother.keep_only(tracker.tracks)
        size = (frame.image.shape[1], frame.image.shape[0])
        if not keep_images:
            frame.image = None
        yield frame, faces, size
