"""The package's version, read from its installed metadata: ``pyproject.toml``'s ``version`` is the one place it
is written (``importlib.metadata``; a source tree that was never installed reports ``0+unknown``)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("expressnet")
except PackageNotFoundError:  # imported from a source tree that was never installed (pip install -e .)
    __version__ = "0+unknown"

__all__ = ["__version__"]
