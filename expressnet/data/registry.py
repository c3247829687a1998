"""``load_dataset``: find the right reader for a path (or a known dataset name) and return a Dataset."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from .affectnet import read_affectnet
from .base import DataError, Dataset, combine_datasets
from .fer2013 import read_fer2013_csv, read_fer2013_folders, read_fer2013_npz
from .ferplus import read_ferplus_csv, read_ferplus_npz
from .folders import read_image_folder
from .rafdb import read_rafdb_kaggle, read_rafdb_official

# known name -> file or folder under data_root() (rafdb: the Kaggle layout, DATASET/ + train_labels.csv/test_labels.csv)
KNOWN_FILES = {
    "fer2013": "fer2013.npz",
    "ferplus": "ferplus.npz",
    "ferplus-majority": "ferplus.npz",
    "rafdb": "rafdb",
}
KNOWN_OPTIONS = {"ferplus-majority": {"protocol": "majority"}}  # reader options a known name implies


def data_root() -> Path:
    """``$EXPRESSNET_DATA``, else ``../shared/data`` from the working directory or from this checkout."""
    env = os.environ.get("EXPRESSNET_DATA")
    if env:
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return Path.cwd() / "data"


def resolve(spec: str | Path) -> Path:
    """A path as given, or a known dataset name (``fer2013``, ``ferplus``, ``ferplus-majority``, ``rafdb``) under
    :func:`data_root`."""
    path = Path(spec)
    if path.exists():
        return path
    if str(spec) in KNOWN_FILES:
        candidate = data_root() / KNOWN_FILES[str(spec)]
        if candidate.exists():
            return candidate
        raise DataError(f"{candidate}: dataset {spec!r} not found (set EXPRESSNET_DATA to the folder holding it)")
    raise DataError(f"{path}: no such file or folder")


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return next(csv.reader(f), [])


def detect_kind(path: Path) -> str:
    """Which reader a path needs; ``DataError`` if none fits."""
    if path.is_file():
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return "ferplus-npz" if "votes" in data.files else "fer2013-npz"
        if path.suffix == ".csv":
            header = set(_csv_header(path))
            if {"emotion", "pixels"} <= header:
                return "fer2013-csv"
            if {"Image name", "neutral"} <= header:
                return "ferplus-csv"
            if {"pth", "label"} <= header:
                return "affectnet"
            raise DataError(f"{path}: unrecognised CSV columns {sorted(header)}")
        if path.name.startswith("list_pat") and path.suffix == ".txt":
            return "rafdb-official"
        raise DataError(f"{path}: unrecognised dataset file (expected .npz, a known .csv, or list_patition_label.txt)")
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    names = {p.name for p in path.iterdir()}
    if "DATASET" in names or "train_labels.csv" in names:
        return "rafdb-kaggle"
    if "list_patition_label.txt" in names:
        return "rafdb-official"
    if "labels.csv" in names and {"pth", "label"} <= set(_csv_header(path / "labels.csv")):
        return "affectnet"
    if "fer2013.csv" in names:
        return "fer2013-csv"
    if {"train", "test"} <= names:
        tests = [p.name for p in (path / "test").rglob("*") if p.is_file()][:50]
        if tests and all(n.startswith(("PublicTest_", "PrivateTest_")) for n in tests):
            return "fer2013-folders"
    return "folder"


def load_dataset(spec: str | Path, kind: str = "auto", **options: Any) -> Dataset:
    """Load a dataset from a path or known name. ``kind`` forces a reader; ``options`` go to the reader
    (e.g. ``images=`` for FER+ CSV votes, ``protocol="majority"`` for FER+, ``num_classes=7`` for AffectNet,
    ``seed=`` for held-out splits). Known names may imply options (``ferplus-majority``). ``A+B`` (names or paths
    that do not exist as given) trains on several datasets as one: see :func:`combine_datasets`."""
    parts = str(spec).split("+")
    if len(parts) > 1 and not Path(spec).exists():
        if options:
            raise DataError(f"{spec}: reader options cannot be given for a combination of datasets")
        return combine_datasets([load_dataset(part, kind) for part in parts], str(spec))
    path = resolve(spec)
    if not Path(spec).exists():
        options = {**KNOWN_OPTIONS.get(str(spec), {}), **options}
    kind = detect_kind(path) if kind == "auto" else kind
    if kind == "fer2013-npz":
        return read_fer2013_npz(path)
    if kind == "fer2013-csv":
        return read_fer2013_csv(path / "fer2013.csv" if path.is_dir() else path)
    if kind == "fer2013-folders":
        return read_fer2013_folders(path)
    if kind == "ferplus-npz":
        return read_ferplus_npz(path, **options)
    if kind == "ferplus-csv":
        return read_ferplus_csv(path, **options)
    if kind == "rafdb-official":
        return read_rafdb_official(path / "list_patition_label.txt" if path.is_dir() else path, **options)
    if kind == "rafdb-kaggle":
        return read_rafdb_kaggle(path, **options)
    if kind == "affectnet":
        return read_affectnet(path, **options)
    if kind == "folder":
        return read_image_folder(path, **options)
    raise DataError(f"unknown dataset kind {kind!r}")
