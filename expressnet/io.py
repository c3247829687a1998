"""Atomic file writes: outputs appear whole or not at all, and never replace an input by accident."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class OutputExists(ValueError):
    """An output exists and the caller did not ask to replace it."""


def refuse_existing(*paths: str | Path, overwrite: bool = False) -> None:
    """:class:`OutputExists` naming the first of ``paths`` that exists, unless ``overwrite``: commands that write
    a file the user names refuse to replace one they had (``--overwrite`` replaces it)."""
    for path in paths:
        if not overwrite and Path(path).exists():
            raise OutputExists(f"{path} exists; add --overwrite to replace it (or choose another path)")


def cache_root() -> Path:
    """Where ExpressNet caches what it fetches or derives (detector and backbone files, ONNX sessions, teacher
    logits): ``$EXPRESSNET_CACHE``, else ``$XDG_CACHE_HOME/expressnet``, else ``~/.cache/expressnet``."""
    root = os.environ.get("EXPRESSNET_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "expressnet"


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write (it keeps the suffix, for writers that choose the format
    by extension); renamed into place when the block ends normally (with the permissions of the file it
    replaces, else the usual ones for new files rather than mkstemp's owner-only), deleted when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place."""
    with atomic_output(path) as tmp:
        write(str(tmp))
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
