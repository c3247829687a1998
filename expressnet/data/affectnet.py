"""AffectNet, Kaggle subset: ``labels.csv`` (pth, label) with class-folder images.

8 classes, or 7 with contempt removed. The paper's protocol is a stratified 80/20 train/test split with
``random_state=52`` over the rows of labels.csv; we then hold out a stratified 10 % of train for validation.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .base import DataError, Dataset, Split, stratified_indices
from .folders import file_reader
from .labels import AFFECTNET7_CLASSES, AFFECTNET8_CLASSES, canonical


def read_affectnet(
    labels_csv: str | Path, num_classes: int = 8, split_seed: int = 52, test_fraction: float = 0.2, seed: int = 0
) -> Dataset:
    labels_csv = Path(labels_csv)
    if labels_csv.is_dir():
        labels_csv = labels_csv / "labels.csv"
    if not labels_csv.is_file():
        raise DataError(f"{labels_csv}: file not found")
    if num_classes not in (7, 8):
        raise DataError(f"AffectNet has 7 or 8 classes, not {num_classes}")
    classes = AFFECTNET8_CLASSES if num_classes == 8 else AFFECTNET7_CLASSES
    root = labels_csv.parent
    paths, labels, skipped = [], [], {}
    with labels_csv.open(newline="") as f:
        reader = csv.DictReader(f)
        if not {"pth", "label"} <= set(reader.fieldnames or ()):
            raise DataError(f"{labels_csv}: expected columns pth,label, found {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                name = canonical(row["label"])
            except ValueError:
                raise DataError(f"{labels_csv}: line {line}: unknown label {row['label']!r}") from None
            if name not in classes:  # contempt in the 7-class variant
                continue
            path = root / row["pth"]
            if not path.is_file():
                skipped[str(path)] = "file not found"
                continue
            paths.append(str(path))
            labels.append(classes.index(name))
    if not paths:
        raise DataError(f"{labels_csv}: no images found")
    full = Split("all", classes, np.array(labels), paths, reader=file_reader(paths), skipped=skipped)
    train, test = stratified_indices(full.labels, test_fraction, split_seed)
    splits = {"train": full.subset(train, "train"), "test": full.subset(test, "test")}
    return Dataset(
        f"affectnet{num_classes}", splits, {"train": "train", "test": "test"}, str(labels_csv)
    ).with_validation_from_train(seed=seed)
