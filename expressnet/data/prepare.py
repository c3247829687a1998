"""Turn a split into model inputs once: uint8 (N, C, S, S) tensors in memory, with unreadable images skipped.
torch is imported by :func:`prepare_split` only: ``Preprocessing`` (which inference needs) comes without it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..config import config_from_dict
from ..progress import track
from .base import DataError, Split
from .images import to_model_input

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Preprocessing:
    """How a face crop becomes model input. Saved with every checkpoint so inference matches training."""

    input_size: int
    channels: int  # 1 gray, 3 RGB
    interpolation: str = "linear"  # OpenCV resize, as the paper
    face_crop: str = "paper"  # rule applied to detector boxes at inference (see expressnet.faces)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return config_from_dict(cls, d, "preprocessing")


@dataclass
class Prepared:
    """A split as model inputs: images uint8 (N, C, S, S), labels (N,), optional soft labels (N, K)."""

    images: torch.Tensor
    labels: torch.Tensor
    soft_labels: torch.Tensor | None
    class_names: tuple[str, ...]
    sources: list[str]
    skipped: dict[str, str]
    fingerprint: str

    def __len__(self) -> int:
        return len(self.labels)


def prepare_split(split: Split, pre: Preprocessing, progress: bool = True) -> Prepared:
    """Decode, convert and resize every image of ``split``; unreadable ones are skipped and counted."""
    import torch  # training and evaluation: the only part of the data layer that needs it

    n = len(split)
    out = np.empty((n, pre.channels, pre.input_size, pre.input_size), dtype=np.uint8)
    keep = np.ones(n, dtype=bool)
    skipped = dict(split.skipped)
    show = progress and split.images is None and n > 200
    for i in track(range(n), f"reading {split.name}", total=n, enabled=show):
        try:
            out[i] = to_model_input(split.image(i), pre.input_size, pre.channels, pre.interpolation)
        except DataError as exc:
            keep[i] = False
            skipped[split.sources[i]] = str(exc)
    idx = np.flatnonzero(keep)
    soft = None if split.soft_labels is None else torch.from_numpy(split.soft_labels[idx])
    return Prepared(
        images=torch.from_numpy(out[idx]),
        labels=torch.from_numpy(split.labels[idx]),
        soft_labels=soft,
        class_names=split.class_names,
        sources=[split.sources[i] for i in idx],
        skipped=skipped,
        fingerprint=split.fingerprint(),
    )
