"""Shipped models and checkpoint loading by name or path, offline.

``load_model()`` returns the default model (see ``DEFAULT``), ``load_model("fer2013")`` /
``load_model("ferplus")`` the shipped ones, and ``load_model(path)`` any ExpressNet checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError, build_model
from .data.base import DataError, Split
from .data.labels import canonical

WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED = {"fer2013": "fer2013.safetensors", "ferplus": "ferplus.safetensors"}
DEFAULT = "fer2013"


def shipped_models() -> dict[str, Path]:
    return {name: WEIGHTS_DIR / file for name, file in SHIPPED.items() if (WEIGHTS_DIR / file).is_file()}


def resolve_model(name_or_path: str | Path | None = None) -> Path:
    key = DEFAULT if name_or_path in (None, "default") else str(name_or_path)
    if key in SHIPPED:
        path = WEIGHTS_DIR / SHIPPED[key]
        if not path.is_file():
            raise CheckpointError(f"{path}: shipped model {key!r} is missing from this installation")
        return path
    path = Path(key)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint (shipped models: {', '.join(SHIPPED)})")
    if path.is_dir():
        path = path / "best.safetensors"  # a training run directory
    return path


def load_model(name_or_path: str | Path | None = None, device: str | torch.device = "cpu"):
    """An ExpressNet-MoE in eval mode with ``.class_names``, ``.preprocessing`` and ``.metadata``."""
    return build_model(resolve_model(name_or_path), device)


def relabel_split(split: Split, class_names: tuple[str, ...]) -> Split:
    """``split`` with labels re-indexed into a model's class order, matching classes by canonical name."""
    mine = [canonical(c) for c in split.class_names]
    theirs = [canonical(c) for c in class_names]
    missing = [c for c in mine if c not in theirs]
    present = set(np.unique(split.labels).tolist())
    if any(mine.index(c) in present for c in missing):
        raise DataError(f"{split.name}: classes {missing} are not predicted by the model (classes {class_names})")
    mapping = np.array([theirs.index(c) if c in theirs else -1 for c in mine])
    soft = None
    if split.soft_labels is not None and not missing:
        soft = np.zeros((len(split), len(class_names)), dtype=np.float32)
        soft[:, mapping] = split.soft_labels
    return Split(
        split.name,
        tuple(class_names),
        mapping[split.labels],
        split.sources,
        split.images,
        split.reader,
        soft,
        split.skipped,
    )
