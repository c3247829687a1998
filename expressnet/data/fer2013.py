"""FER-2013 (Goodfellow et al. 2013): the original CSV, the Kaggle image folders and our npz form.

Splits keep the official names Training / PublicTest / PrivateTest; roles are train=Training,
val=PublicTest, test=PrivateTest. ``PublicTest+PrivateTest`` is the paper's "all 7,178 test images".
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .base import DataError, Dataset, Split
from .folders import read_class_folders
from .labels import FER2013_CLASSES

SPLITS = ("Training", "PublicTest", "PrivateTest")
# "test-all" is the paper's FER-2013 protocol: all 7,178 test images (PublicTest + PrivateTest).
ROLES = {"train": "Training", "val": "PublicTest", "test": "PrivateTest", "test-all": "PublicTest+PrivateTest"}


def _from_arrays(
    name: str, root: Path, images: np.ndarray, labels: np.ndarray, usage: np.ndarray, sources, skipped=None
) -> Dataset:
    splits = {}
    for split in SPLITS:
        idx = np.flatnonzero(usage == split)
        if len(idx):
            splits[split] = Split(split, FER2013_CLASSES, labels[idx], [sources[i] for i in idx], images=images[idx])
    if skipped:
        next(iter(splits.values())).skipped.update(skipped)
    return Dataset(name, splits, present_roles(splits), str(root))


def present_roles(splits: dict[str, Split]) -> dict[str, str]:
    """The roles whose splits all exist."""
    return {r: s for r, s in ROLES.items() if all(p in splits for p in s.split("+"))}


def read_fer2013_npz(path: str | Path) -> Dataset:
    """``fer2013.npz``: images (N, 48, 48) uint8, labels in the official order, split, paths, class_names."""
    path = Path(path)
    data = np.load(path, allow_pickle=False)
    missing = {"images", "labels", "split"} - set(data.files)
    if missing:
        raise DataError(f"{path}: not a FER-2013 npz (missing arrays {sorted(missing)})")
    if "class_names" in data.files and tuple(data["class_names"]) != FER2013_CLASSES:
        raise DataError(f"{path}: class_names {tuple(data['class_names'])} are not FER-2013's {FER2013_CLASSES}")
    labels = data["labels"].astype(np.int64)
    if labels.min() < 0 or labels.max() > 6:
        raise DataError(f"{path}: labels outside 0..6")
    sources = list(data["paths"]) if "paths" in data.files else [f"{path.name}:{i}" for i in range(len(labels))]
    return _from_arrays("fer2013", path, data["images"], labels, data["split"], sources)


def read_fer2013_csv(path: str | Path) -> Dataset:
    """The original ``fer2013.csv`` (columns emotion, pixels, Usage). Malformed rows are skipped and counted."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    images, labels, usage, sources, skipped = [], [], [], [], {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        need = {"emotion", "pixels", "Usage"}
        if not need <= set(reader.fieldnames or ()):
            raise DataError(f"{path}: expected columns {sorted(need)}, found {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            where = f"{path.name}:{line}"
            try:
                label = int(row["emotion"])
            except ValueError:
                raise DataError(f"{path}: line {line}: unknown label {row['emotion']!r}") from None
            if not 0 <= label <= 6:
                raise DataError(f"{path}: line {line}: unknown label {label} (expected 0..6)")
            if row["Usage"] not in SPLITS:
                raise DataError(f"{path}: line {line}: unknown Usage {row['Usage']!r} (expected {SPLITS})")
            try:
                pixels = np.array(row["pixels"].split(), dtype=np.int64)
                if pixels.size != 48 * 48 or pixels.min() < 0 or pixels.max() > 255:
                    raise ValueError(f"{pixels.size} values")
            except ValueError as exc:
                skipped[where] = f"unreadable image: pixels must be 2304 values in 0..255 ({exc})"
                continue
            images.append(pixels.astype(np.uint8).reshape(48, 48))
            labels.append(label)
            usage.append(row["Usage"])
            sources.append(where)
    if not images:
        raise DataError(f"{path}: no usable rows")
    return _from_arrays("fer2013", path, np.stack(images), np.array(labels), np.array(usage), sources, skipped)


def read_fer2013_folders(root: str | Path) -> Dataset:
    """Kaggle layout ``train/<emotion>/*.jpg`` and ``test/<emotion>/*.jpg``.

    Test files named ``PublicTest_*``/``PrivateTest_*`` are split accordingly; otherwise ``test`` is one split
    and validation must come from the train split.
    """
    root = Path(root)
    train = read_class_folders(root / "train", FER2013_CLASSES, "Training")
    test = read_class_folders(root / "test", FER2013_CLASSES, "test")
    splits = {"Training": train}
    prefixes = {Path(s).name.split("_")[0] for s in test.sources}
    if prefixes <= {"PublicTest", "PrivateTest"} and len(prefixes) == 2:
        for split in ("PublicTest", "PrivateTest"):
            idx = [i for i, s in enumerate(test.sources) if Path(s).name.startswith(split + "_")]
            splits[split] = test.subset(idx, split)
        roles = dict(ROLES)
    else:
        splits["test"] = test
        roles = {"train": "Training", "test": "test", "test-all": "test"}
    dataset = Dataset("fer2013", splits, roles, str(root))
    return dataset if "val" in roles else dataset.with_validation_from_train()
