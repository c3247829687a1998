"""Pins: the exact model file a recipe starts from (``init_from``) or learns from (``teacher``).

A shipped name such as ``fer2013`` means a different file after each release, so the recipes in ``configs/`` name
their models as pins (configs/README.md)::

    {model: fer2013, sha256: HEX}                     the shipped file of that name, as it is now
    {model: fer2013-fast, git: COMMIT, sha256: HEX}   the shipped file of that name as it was at COMMIT
    {model: runs/x/best.safetensors, config: x.yaml}  the output of another recipe's run

:func:`resolve_pin` checks a pin and answers what ``load_model`` takes; a plain string passes through unchanged.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..hub import WEIGHTS_DIR, list_models, resolve_model
from ..io import atomic_write_bytes, cache_root, file_sha256


class PinError(ValueError):
    """A pin that does not hold; the message names the file and what to do."""


@dataclass(frozen=True)
class Pin:
    model: str  # a shipped name or a checkpoint path / run folder
    sha256: str | None = None  # the file's sha256 (shipped now, or at ``git``)
    git: str | None = None  # the commit whose expressnet/weights/<file> is meant
    config: str | None = None  # the recipe whose run makes ``model`` (no sha256: runs are not kept)

    def __post_init__(self) -> None:
        if (self.sha256 is None) == (self.config is None):
            raise ValueError(f"pin {self.model!r}: give a sha256, or the config whose run makes it (not both)")
        if self.git is not None and self.sha256 is None:
            raise ValueError(f"pin {self.model!r}: a git pin needs the file's sha256")


def git_file(commit: str, path: Path) -> bytes:
    """``git show COMMIT:PATH`` for a file of this repository (PinError if git or the commit is missing)."""
    top = subprocess.run(
        ["git", "-C", str(path.parent), "rev-parse", "--show-toplevel"], capture_output=True, text=True
    )
    if top.returncode != 0:
        raise PinError(f"{path}: not in a git checkout, so the pinned file of commit {commit} cannot be read")
    relative = path.resolve().relative_to(Path(top.stdout.strip()).resolve()).as_posix()
    done = subprocess.run(["git", "-C", top.stdout.strip(), "show", f"{commit}:{relative}"], capture_output=True)
    if done.returncode != 0:
        raise PinError(f"{relative} at {commit}: {done.stderr.decode().strip()} (a full clone has every commit)")
    return done.stdout


def pinned_path(value: Pin) -> Path:
    """The file a sha256 pin names: a shipped name's checkpoint, or, for a git pin, the name's file in
    expressnet/weights even where the name has been retired since (git keeps the file)."""
    if value.git is not None and "/" not in value.model and value.model not in list_models():
        return WEIGHTS_DIR / f"{value.model}.safetensors"
    return resolve_model(value.model)


def resolve_pin(value: str | Pin) -> str:
    """The model reference a pin stands for, once checked: the shipped name (its file has the pinned sha256), a
    cached copy of the file at the pinned commit, or the run output the pin's config makes."""
    if isinstance(value, str):
        return value
    if value.config is not None:
        if not Path(value.model).exists():
            raise PinError(f"{value.model}: not found; it is made by `expressnet train --config {value.config}`")
        return value.model
    path = pinned_path(value)
    if value.git is None:
        digest = file_sha256(path)
        if digest != value.sha256:
            raise PinError(f"{path}: sha256 {digest}, but the recipe pins {value.sha256} (another release of it?)")
        return value.model
    target = cache_root() / "pins" / f"{value.sha256}{path.suffix}"
    if not target.is_file() or file_sha256(target) != value.sha256:
        data = git_file(value.git, path)
        digest = hashlib.sha256(data).hexdigest()
        if digest != value.sha256:
            raise PinError(f"{path} at {value.git}: sha256 {digest}, but the recipe pins {value.sha256}")
        atomic_write_bytes(target, data)
    return str(target)
