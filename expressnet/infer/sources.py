"""Every input the recognizer takes, in one place: images (paths, PIL images, arrays, encoded bytes) as RGB,
folders and globs as lists of files, video files and cameras as frames, and the video settings' checks.

    load_rgb("photo.jpg")            # also a PIL image, an array (color="bgr" for OpenCV, "rgb") or JPEG bytes
    expand_source("photos/")         # [Path, ...] of a file, folder or glob; an int for a camera ("0")
    iter_source("photos/", recursive=True)  # the same, lazily (a generator), also a list file (paths.txt)
    for frame in VideoSource("clip.mp4", every=2):
        frame.index, frame.time_s, frame.image
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..data.base import DataError
from ..data.images import IMAGE_SUFFIXES, array_to_rgb, decode_image_bytes, display_name, pil_to_rgb, read_image

LIST_SUFFIXES = (".txt", ".lst", ".csv")  # a source file with these suffixes lists the inputs, one a line
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
ImageInput = str | Path | Image.Image | np.ndarray | bytes


def check_video_options(every: int = 1, smooth: float | None = None) -> None:
    """The one check of the video settings: ``every`` >= 1 (process every N-th frame) and ``smooth``, the
    smoothing alpha, None or in (0, 1]. Raises ``ValueError``."""
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be an integer >= 1, got {every!r}")
    if smooth is not None and not 0 < smooth <= 1:
        raise ValueError(f"smooth (the smoothing alpha) must be in (0, 1], got {smooth}")


COLOR_HELP = (
    "say the channel order of a colour array: color='bgr' for OpenCV (cv2.imread, cv2.VideoCapture), "
    "color='rgb' for PIL, imageio or matplotlib"
)


def load_rgb(image: ImageInput, color: str | None = None) -> np.ndarray:
    """A path, PIL image, array or encoded image bytes as RGB uint8 (H, W, 3). ``color`` ("rgb"/"bgr") is the
    channel order of a colour array, which must be given: OpenCV reads BGR, PIL RGB, and the pixels cannot tell
    (a gray array needs none). Files and bytes that cannot be decoded raise ``DataError`` naming them."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if isinstance(image, np.ndarray):
        colour = image.ndim == 3 and image.shape[2] in (3, 4)
        if color is None and colour:
            raise ValueError(f"a {image.shape[2]}-channel array: {COLOR_HELP}")
        return array_to_rgb(image, color or "rgb")
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image_bytes(bytes(image))
    if isinstance(image, (list, tuple)):
        raise TypeError(f"expected one image, got a {type(image).__name__}: for several use predict_batch([...])")
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


def sorted_entries(folder: Path) -> list[os.DirEntry]:
    """A folder's entries by name (the names of one folder are held, never a whole tree's)."""
    with os.scandir(folder) as entries:
        return sorted(entries, key=lambda e: e.name)


def walk_folder(folder: Path, recursive: bool = False) -> Iterator[Path]:
    """The entries of ``folder`` named as images or videos, by name; ``recursive`` goes into subfolders (at
    their place in the order, links to folders not followed). Entries that are not readable files (a folder
    named ``x.jpg``, a broken link) are kept so that they are reported."""
    for entry in sorted_entries(folder):
        path = Path(entry.path)
        if recursive and entry.is_dir(follow_symlinks=False):
            yield from walk_folder(path, recursive)
        elif is_input_path(path):
            yield path


def walk_glob(base: Path, parts: list[str]) -> Iterator[Path]:
    """Files matching the pattern ``parts`` (path components, ``**`` any number of folders) under ``base``,
    lazily and in name order per folder; names starting with a dot match only a pattern that does."""
    if not parts:
        if not base.is_dir():
            yield base
        return
    head, rest = parts[0], parts[1:]
    if not glob.has_magic(head):
        target = base / head
        if target.exists() or target.is_symlink():
            yield from walk_glob(target, rest)
        return
    if not base.is_dir():
        return
    try:
        entries = sorted_entries(base)
    except OSError:
        return
    if head == "**":
        yield from walk_glob(base, rest)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                yield from walk_glob(Path(entry.path), parts)
        return
    for entry in entries:
        if entry.name.startswith(".") and not head.startswith("."):
            continue
        if fnmatch.fnmatchcase(entry.name, head):
            yield from walk_glob(Path(entry.path), rest)


def glob_parts(pattern: str) -> tuple[Path, list[str]]:
    """A glob pattern as the folder it starts from and the components that follow."""
    path = Path(pattern)
    base = Path(path.anchor) if path.is_absolute() else Path()
    parts = list(path.parts[1:] if path.is_absolute() else path.parts)
    return base, parts


def read_list(path: Path) -> Iterator[Path]:
    """The paths a list file names, lazily: one a line (``.txt``/``.lst``; blank lines and ``#`` comments
    skipped) or the ``path`` column of a CSV (else its first column); relative ones are relative to the file."""
    with path.open(newline="", errors="surrogateescape") as f:
        if path.suffix.lower() == ".csv":
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return
            column = header.index("path") if "path" in header else 0
            if "path" not in header:
                f.seek(0)
                reader = csv.reader(f)
            names: Iterable[str] = (row[column] for row in reader if len(row) > column and row[column].strip())
        else:
            names = (line.strip() for line in f if line.strip() and not line.lstrip().startswith("#"))
        for name in names:
            item = Path(name.strip())
            yield item if item.is_absolute() else path.parent / item


def iter_source(source: str | Path, recursive: bool = False) -> Iterator[Path] | int:
    """:func:`expand_source` lazily, for jobs of any size: a camera index, or a generator of the input files of
    a file, a folder (walked in name order; ``recursive`` goes into subfolders), a glob pattern or a list file
    (``.txt``/``.lst``/``.csv``: see :func:`read_list`). Raises :class:`DataError` at once when the source does
    not exist, and when it matches nothing once the generator ends without a file."""
    camera = camera_index(source)
    if camera is not None:
        return camera
    path = Path(source)
    if path.is_dir():
        return nonempty(walk_folder(path, recursive), f"{display_name(path)}: no image or video files in this folder")
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        return nonempty(read_list(path), f"{display_name(path)}: the list names no file")
    if path.exists() or path.is_symlink():
        return iter([path])
    if glob.has_magic(str(source)):
        return nonempty(walk_glob(*glob_parts(str(source))), f"{display_name(source)}: no files match this pattern")
    raise DataError(f"{display_name(source)}: no such file, folder or camera")


def glob_matches(parts: list[str], names: list[str]) -> bool:
    """Whether path components ``names`` match the glob components ``parts`` (``**``: any number of folders)."""
    if not parts:
        return not names
    if parts[0] == "**":
        return any(glob_matches(parts[1:], names[i:]) for i in range(len(names) + 1))
    if not names or (names[0].startswith(".") and not parts[0].startswith(".")):
        return False
    return fnmatch.fnmatchcase(names[0], parts[0]) and glob_matches(parts[1:], names[1:])


def is_source_input(path: str | Path, source: str | Path, recursive: bool = False) -> bool:
    """Whether the existing ``path`` is (or may be) one of the inputs of ``source``: what an output must not
    take. Without enumerating the source; a list file's entries are not read (any existing file may be one)."""
    path, src = Path(path), Path(source)
    if not (path.exists() or path.is_symlink()):
        return False
    if src.is_dir():
        parent, folder = real_path(path.parent), real_path(src)
        return is_input_path(path) and (parent == folder or (recursive and folder in parent.parents))
    if src.is_file() and src.suffix.lower() in LIST_SUFFIXES:
        return True
    if not src.exists() and glob.has_magic(str(source)):
        pattern = Path(os.path.abspath(source)).parts
        return glob_matches(list(pattern[1:]), list(Path(os.path.abspath(path)).parts[1:]))
    return real_path(path) == real_path(src)


def nonempty(paths: Iterator[Path], message: str) -> Iterator[Path]:
    """``paths``, raising ``DataError(message)`` at the end when there was none."""
    empty = True
    for path in paths:
        empty = False
        yield path
    if empty:
        raise DataError(message)


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

    def __init__(
        self,
        source: str | Path | int,
        every: int = 1,
        max_frames: int | None = None,
        start: int = 0,
        processed: int = 0,
    ) -> None:
        check_video_options(every)
        self.every, self.max_frames = every, max_frames
        # resuming: frames before ``start`` are skipped (grabbed, not decoded); ``processed`` were done before
        self.start, self.processed_before = start, processed
        self.camera = camera_index(source)
        self.name = f"camera:{self.camera}" if self.camera is not None else display_name(source)
        if self.camera is None and not Path(source).is_file():
            raise DataError(f"{self.name}: file not found" + (" (a folder)" if Path(source).is_dir() else ""))
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # one error line of ours, not OpenCV's
        try:
            self.capture = cv2.VideoCapture(self.camera if self.camera is not None else str(source))
            opened = self.capture.isOpened()
        except cv2.error as exc:
            raise DataError(f"{self.name}: cannot open as a video ({exc})") from exc
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not opened:
            what = "no such camera, or it is busy" if self.camera is not None else "not a video file, or its codec"
            raise DataError(f"{self.name}: cannot open as a video ({what})")
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
        index, processed = 0, self.processed_before
        while index < self.start and self.read(decode=False)[0]:
            index += 1
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
