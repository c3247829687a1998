"""FER+ (Barsoum et al. 2016): ten crowd votes per FER-2013 image.

Two test protocols (``protocol=``), both dropping images the crowd did not see as one emotion:

- ``"plurality"`` (default): the label is the top emotion vote (earlier column on ties); images where "unknown"
  or "not a face" got at least as many votes as the top emotion are dropped. Soft labels: the normalised
  distribution of the 8 emotion votes.
- ``"majority"``: the reference code's majority mode (microsoft/FERPlus ``ferplus.py``, used for the paper's
  test figures): single votes are removed as outliers, then an image is kept only if one emotion has more
  than half of the remaining votes (unknown and not-a-face included). Soft labels use the votes left after
  outlier removal. A stricter subset: ambiguous faces are not scored. Only unknown and not-a-face majorities
  are dropped, as the FER+ paper describes; the reference reader's ``idx < emotion_count - 2`` check with
  ``emotion_count=8`` would also drop fear and contempt faces.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np

from .base import DataError, Dataset, Split
from .fer2013 import SPLITS, present_roles, read_fer2013_csv
from .labels import FER2013_CLASSES, FERPLUS_CLASSES, FERPLUS_VOTE_COLUMNS, canonical

SKIP_REASONS = {  # protocol -> why an image is not scored
    "plurality": "unknown/not-a-face votes dominate",
    "majority": "no emotion has more than half of the votes",
}
PROTOCOLS = tuple(SKIP_REASONS)


def vote_labels(votes: np.ndarray, protocol: str = "plurality") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, soft labels, keep mask) from (N, 10) votes in FER+ column order under a test ``protocol``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown FER+ protocol {protocol!r} (expected one of {PROTOCOLS})")
    votes = np.asarray(votes, dtype=np.float64)
    if protocol == "majority":
        votes = np.where(votes <= 1, 0, votes)  # single votes are outliers
        emotions = votes[:, :8]
        keep = emotions.max(axis=1) > 0.5 * votes.sum(axis=1)
    else:
        emotions = votes[:, :8]
        top = emotions.max(axis=1)
        keep = (top > 0) & (np.maximum(votes[:, 8], votes[:, 9]) < top)
    soft = emotions / np.maximum(emotions.sum(axis=1, keepdims=True), 1)
    return emotions.argmax(axis=1), soft.astype(np.float32), keep


def _dataset(
    root: Path, images: np.ndarray, votes: np.ndarray, usage: np.ndarray, sources: list[str], protocol: str
) -> Dataset:
    labels, soft, keep = vote_labels(votes, protocol)
    splits = {}
    for split in SPLITS:
        idx = np.flatnonzero(usage == split)
        kept = idx[keep[idx]]
        if not len(idx):
            continue
        s = Split(
            split,
            FERPLUS_CLASSES,
            labels[kept],
            [sources[i] for i in kept],
            images=images[kept],
            soft_labels=soft[kept],
        )
        s.skipped.update({sources[i]: SKIP_REASONS[protocol] for i in idx[~keep[idx]]})
        splits[split] = s
    name = "ferplus" if protocol == "plurality" else f"ferplus-{protocol}"
    return Dataset(name, splits, present_roles(splits), str(root))


def read_ferplus_npz(path: str | Path, protocol: str = "plurality") -> Dataset:
    """``ferplus.npz``: lossless FER-2013 pixels with the fer2013new.csv votes (see PROVENANCE.md)."""
    path = Path(path)
    data = np.load(path, allow_pickle=False)
    missing = {"images", "votes", "split"} - set(data.files)
    if missing:
        raise DataError(f"{path}: not a FER+ npz (missing arrays {sorted(missing)})")
    if data["votes"].shape[1] != 10:
        raise DataError(f"{path}: votes must have 10 columns {FERPLUS_VOTE_COLUMNS}")
    sources = list(data["paths"]) if "paths" in data.files else [f"{path.name}:{i}" for i in range(len(data["votes"]))]
    return _dataset(path, data["images"], data["votes"], data["split"], sources, protocol)


def read_ferplus_csv(votes_csv: str | Path, images: str | Path | None = None, protocol: str = "plurality") -> Dataset:
    """``fer2013new.csv`` votes joined row by row to FER-2013 pixels from ``fer2013.csv``.

    ``images`` defaults to ``fer2013.csv`` beside the votes file. Rows with an empty image name (no FER+
    image) are skipped, as FER+ itself does.
    """
    votes_csv = Path(votes_csv)
    images = Path(images) if images else votes_csv.with_name("fer2013.csv")
    if not votes_csv.is_file():
        raise DataError(f"{votes_csv}: file not found")
    if not images.is_file():
        raise DataError(f"{images}: FER-2013 pixels needed for the FER+ votes in {votes_csv} (pass images=...)")
    if images.suffix == ".npz":
        raise DataError(f"{images}: the Kaggle npz is not in fer2013.csv row order; use ferplus.npz or fer2013.csv")
    fer = read_fer2013_csv(images)
    by_row = {}
    for split in fer.splits.values():
        for i, src in enumerate(split.sources):
            by_row[int(src.rsplit(":", 1)[1]) - 2] = (split.images[i], split.name)
    rows, votes, names = [], [], []
    with votes_csv.open(newline="") as f:
        reader = csv.DictReader(f)
        need = {"Usage", "Image name", *FERPLUS_VOTE_COLUMNS}
        if not need <= set(reader.fieldnames or ()):
            raise DataError(f"{votes_csv}: expected columns {sorted(need)}, found {reader.fieldnames}")
        for r, row in enumerate(reader):
            if not row["Image name"].strip():
                continue
            if r not in by_row:
                raise DataError(f"{votes_csv}: line {r + 2} has no pixels in {images} (row {r + 2})")
            if by_row[r][1] != row["Usage"]:
                raise DataError(f"{votes_csv}: line {r + 2}: Usage {row['Usage']} but {images} says {by_row[r][1]}")
            try:
                votes.append([int(row[c]) for c in FERPLUS_VOTE_COLUMNS])
            except ValueError:
                raise DataError(f"{votes_csv}: line {r + 2}: votes must be integers") from None
            rows.append(r)
            names.append(row["Image name"].strip())
    pixels = np.stack([by_row[r][0] for r in rows])
    usage = np.array([by_row[r][1] for r in rows])
    return _dataset(votes_csv, pixels, np.array(votes), usage, names, protocol)


def with_vote_targets(split: Split, fer2013_npz: str | Path, ferplus_npz: str | Path, weight: float) -> Split:
    """A copy of a FER-2013 split whose soft labels blend its own labels with the FER+ votes of the same images.

    target = (1 - weight) * one-hot(FER-2013 label) + weight * FER+ vote distribution over the FER-2013 classes
    (contempt, unknown and not-a-face votes are left out). With ``weight < 0.5`` the FER-2013 label stays the
    target's top class, so the votes only say which other classes are plausible. Images are matched by pixels
    through ``kaggle_match_index``; only FER+ votes of the same split are used (FER-2013 repeats some images
    across splits, and test votes must not reach training). Duplicates pool their votes; images without usable
    votes keep their one-hot label.
    """
    if not 0 <= weight <= 1:
        raise ValueError(f"vote weight must be in [0, 1], got {weight}")
    if split.images is None:
        raise DataError(f"{split.name}: FER+ vote targets need the images in memory (use fer2013.npz)")
    if tuple(split.class_names) != FER2013_CLASSES:
        raise DataError(f"{split.name}: FER+ vote targets are for FER-2013's classes, not {split.class_names}")
    with np.load(ferplus_npz, allow_pickle=False) as plus:
        if "kaggle_match_index" not in plus.files:
            raise DataError(f"{ferplus_npz}: no kaggle_match_index, so its votes cannot be matched to FER-2013 images")
        same = plus["split"] == split.name
        rows, all_votes = plus["kaggle_match_index"][same], plus["votes"][same]
    with np.load(fer2013_npz, allow_pickle=False) as fer:
        images = fer["images"]
    columns = [FER2013_CLASSES.index(canonical(c)) for c in FERPLUS_VOTE_COLUMNS[:7]]  # contempt has no class
    pooled: dict[bytes, np.ndarray] = {}
    for row, votes in zip(rows, all_votes):
        dist = np.zeros(len(FER2013_CLASSES))
        dist[columns] = votes[:7]
        key = images[row].tobytes()
        pooled[key] = pooled.get(key, 0) + dist
    if not pooled:
        raise DataError(f"{ferplus_npz}: no FER+ votes for split {split.name!r}")
    targets = np.eye(len(FER2013_CLASSES), dtype=np.float32)[split.labels]
    for i, image in enumerate(split.images):
        votes = pooled.get(image.tobytes())
        if votes is not None and votes.sum() > 0:
            targets[i] = (1 - weight) * targets[i] + weight * votes / votes.sum()
    return replace(split, soft_labels=targets, skipped=dict(split.skipped))
