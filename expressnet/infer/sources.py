"""Every input the recognizer takes, in one place: images (paths, PIL images, arrays, encoded bytes) as RGB,
folders and globs as lists of files, video files and cameras as frames, and the video settings' checks.

    load_rgb("photo.jpg")            # also a PIL image, an array (color="bgr" for OpenCV) or JPEG/PNG bytes
    expand_source("photos/")         # [Path, ...] of a file, folder or glob; an int for a camera ("0")
    for frame in VideoSource("clip.mp4", every=2):
        frame.index, frame.time_s, frame.image
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..data.base import DataError
from ..data.images import IMAGE_SUFFIXES, array_to_rgb, decode_image_bytes, display_name, pil_to_rgb, read_image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
ImageInput = str | Path | Image.Image | np.ndarray | bytes


def check_video_options(every: int = 1, smooth: float | None = None) -> None:
    """The one check of the video settings: ``every`` >= 1 (process every N-th frame) and ``smooth``, the
    smoothing alpha, None or in (0, 1]. Raises ``ValueError``."""
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be an integer >= 1, got {every!r}")
    if smooth is not None and not 0 < smooth <= 1:
        raise ValueError(f"smooth (the smoothing alpha) must be in (0, 1], got {smooth}")


def load_rgb(image: ImageInput, color: str = "rgb") -> np.ndarray:
    """A path, PIL image, array or encoded image bytes as RGB uint8 (H, W, 3); ``color`` ("rgb"/"bgr") is the
    channel order of arrays. Files and bytes that cannot be decoded raise ``DataError`` naming them."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if isinstance(image, np.ndarray):
        return array_to_rgb(image, color)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image_bytes(bytes(image))
    raise TypeError(f"expected a path, PIL image or numpy array (or image bytes), got {type(image).__name__}")


def camera_index(source: str | Path | int) -> int | None:
    """The camera index when ``source`` names a camera (an int or a string of digits), else None."""
    if isinstance(source, int):
        return source
    text = str(source)
    return int(text) if text.isdigit() and not Path(text).exists() else None


def real_path(path: str | Path) -> Path:
    """``path`` absolute with its links resolved, as far as they go (a symlink loop does not raise)."""
    return Path(os.path.realpath(path))


def is_video_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_input_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES or is_video_path(path)


def expand_source(source: str | Path) -> list[Path] | int:
    """A camera index, or the input files of a file, a folder (its entries named as images or videos,
    sorted, not recursive; one that is not a readable file, such as a folder named ``x.jpg`` or a broken
    link, is kept so that it is reported) or a glob pattern. Raises :class:`DataError` when nothing matches."""
    camera = camera_index(source)
    if camera is not None:
        return camera
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if is_input_path(p))
        if not files:
            raise DataError(f"{display_name(path)}: no image or video files in this folder")
        return files
    if path.exists() or path.is_symlink():
        return [path]
    if glob.has_magic(str(source)):
        files = [Path(p) for p in sorted(glob.glob(str(source), recursive=True)) if not Path(p).is_dir()]
        if not files:
            raise DataError(f"{display_name(source)}: no files match this pattern")
        return files
    raise DataError(f"{display_name(source)}: no such file, folder or camera")


@dataclass
class VideoFrame:
    index: int  # frame number in the source, from 0
    time_s: float  # from the index and the file's FPS; wall-clock seconds since opening for cameras
    image: np.ndarray  # RGB uint8 (H, W, 3)


class VideoSource:
    """Every ``every``-th frame of a video file or camera as RGB, up to ``max_frames`` processed frames.

    Raises :class:`DataError` naming the source when it cannot be opened or decodes no frame; a file whose
    later frames cannot be decoded ends at the last good one.
    """

    def __init__(self, source: str | Path | int, every: int = 1, max_frames: int | None = None) -> None:
        check_video_options(every)
        self.every, self.max_frames = every, max_frames
        self.camera = camera_index(source)
        self.name = f"camera:{self.camera}" if self.camera is not None else display_name(source)
        if self.camera is None and not Path(source).is_file():
            raise DataError(f"{self.name}: file not found" + (" (a folder)" if Path(source).is_dir() else ""))
        try:
            self.capture = cv2.VideoCapture(self.camera if self.camera is not None else str(source))
            opened = self.capture.isOpened()
        except cv2.error as exc:
            raise DataError(f"{self.name}: cannot open as a video ({exc})") from exc
        if not opened:
            raise DataError(f"{self.name}: cannot open as a video (not a video file, unsupported codec or no camera)")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else 0.0
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)) if self.camera is None else 0
        self.frame_count = count if count > 0 else None
        # the container's frame size (W, H), known before any frame is decoded (the API checks it)
        self.size = (int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    @property
    def expected_frames(self) -> int | None:
        """How many frames iteration will yield, when the frame count is known."""
        if self.frame_count is None:
            return self.max_frames
        n = -(-self.frame_count // self.every)
        return n if self.max_frames is None else min(n, self.max_frames)

    def read(self, decode: bool) -> tuple[bool, np.ndarray | None]:
        """The next frame (decoded or only grabbed); (False, None) at the end or at an undecodable frame."""
        try:
            if not decode:
                return self.capture.grab(), None
            ok, bgr = self.capture.read()
            if not ok or bgr is None or bgr.ndim != 3:
                return False, None
            return True, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        except cv2.error:
            return False, None

    def __iter__(self) -> Iterator[VideoFrame]:
        start = time.monotonic()
        index = processed = 0
        while self.max_frames is None or processed < self.max_frames:
            ok, rgb = self.read(decode=index % self.every == 0)
            if not ok:
                break
            if rgb is not None:
                live = self.camera is not None or not self.fps
                seconds = time.monotonic() - start if live else index / self.fps
                yield VideoFrame(index, seconds, rgb)
                processed += 1
            index += 1
        if processed == 0 and self.camera is None:
            raise DataError(f"{self.name}: no decodable video frame")

    def close(self) -> None:
        self.capture.release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
