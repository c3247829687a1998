"""RAF-DB basic (Li et al. 2017): Kaggle layout or the official ``list_patition_label.txt`` + ``aligned/``.

Labels 1..7 = surprise, fear, disgust, happy, sad, angry, neutral. There is no official validation split:
val is a stratified, seeded 10 % of train.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .base import DataError, Dataset, Split
from .folders import file_reader
from .labels import RAFDB_CLASSES


def _label(value: str, where: str) -> int:
    try:
        label = int(value)
    except ValueError:
        raise DataError(f"{where}: unknown label {value!r} (expected 1..7)") from None
    if not 1 <= label <= 7:
        raise DataError(f"{where}: unknown label {label} (expected 1..7)")
    return label - 1


def _split(name: str, entries: list[tuple[Path, int]]) -> Split:
    present = [(p, y) for p, y in entries if p.is_file()]
    paths = [str(p) for p, _ in present]
    split = Split(
        name, RAFDB_CLASSES, np.array([y for _, y in present], dtype=np.int64), paths, reader=file_reader(paths)
    )
    split.skipped.update({str(p): "file not found" for p, _ in entries if not p.is_file()})
    return split


def parse_rafdb_labels(label_file: str | Path) -> dict[str, list[tuple[str, int]]]:
    """``list_patition_label.txt`` -> {"train": [(name, label 0..6)], "test": [...]}."""
    label_file = Path(label_file)
    if not label_file.is_file():
        raise DataError(f"{label_file}: file not found")
    entries: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for line_no, line in enumerate(label_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{label_file}: line {line_no}: expected '<name> <label>', got {line!r}")
        name, value = parts
        split = name.split("_")[0]
        if split not in entries:
            raise DataError(f"{label_file}: line {line_no}: name {name!r} starts with neither train_ nor test_")
        entries[split].append((name, _label(value, f"{label_file}: line {line_no}")))
    return entries


def read_rafdb_official(label_file: str | Path, images: str | Path | None = None, seed: int = 0) -> Dataset:
    """``list_patition_label.txt`` lines ``train_00001.jpg 5``; images ``aligned/train_00001_aligned.jpg``."""
    label_file = Path(label_file)
    entries = parse_rafdb_labels(label_file)
    if images is None:
        candidates = [label_file.parent / "aligned", label_file.parent / "Image" / "aligned"]
        images = next((c for c in candidates if c.is_dir()), candidates[0])
    images = Path(images)
    if not images.is_dir():
        raise DataError(f"{images}: aligned image folder not found (needed by {label_file})")
    splits = {
        split: _split(split, [(images / f"{Path(name).stem}_aligned.jpg", y) for name, y in items])
        for split, items in entries.items()
    }
    return Dataset("rafdb", splits, {"train": "train", "test": "test"}, str(label_file)).with_validation_from_train(
        seed=seed
    )


def read_rafdb_kaggle(root: str | Path, seed: int = 0) -> Dataset:
    """``DATASET/{train,test}/<1..7>/<name>`` with ``train_labels.csv``/``test_labels.csv`` (image,label)."""
    root = Path(root)
    base = root / "DATASET" if (root / "DATASET").is_dir() else root
    splits = {}
    for split in ("train", "test"):
        csv_path = next((p for p in (root / f"{split}_labels.csv", base / f"{split}_labels.csv") if p.is_file()), None)
        if csv_path is None:
            raise DataError(f"{root}: {split}_labels.csv not found")
        entries = []
        with csv_path.open(newline="") as f:
            reader = csv.DictReader(f)
            if not {"image", "label"} <= set(reader.fieldnames or ()):
                raise DataError(f"{csv_path}: expected columns image,label, found {reader.fieldnames}")
            for line, row in enumerate(reader, start=2):
                label = _label(row["label"], f"{csv_path}: line {line}")
                entries.append((base / split / str(label + 1) / row["image"], label))
        splits[split] = _split(split, entries)
    return Dataset("rafdb", splits, {"train": "train", "test": "test"}, str(root)).with_validation_from_train(seed=seed)
