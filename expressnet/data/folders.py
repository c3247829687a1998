"""Image-folder datasets: ``root/<class>/*.jpg`` (CK+-style and any custom data), optionally with split folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataError, Dataset, Split, stratified_indices
from .images import IMAGE_SUFFIXES, read_image
from .labels import canonical


def file_reader(paths: list[str]):
    """A ``Split.reader`` decoding ``paths[i]`` as RGB."""
    return lambda i: read_image(paths[i])


def folder_class(folder: Path) -> str:
    """Canonical emotion named by a class folder; ``DataError`` naming the folder if it is not one."""
    try:
        return canonical(folder.name)
    except ValueError:
        raise DataError(f"{folder}: unknown emotion class folder {folder.name!r}") from None


def read_class_folders(root: Path, class_names: tuple[str, ...] | None, split: str) -> Split:
    """One split from ``root/<class>/<image>``; class folder names may use any common spelling."""
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DataError(f"{root}: no class folders (expected {root}/<emotion>/<image files>)")
    names = {folder: folder_class(folder) for folder in folders}
    if class_names is None:
        class_names = tuple(sorted(set(names.values())))
    paths, labels = [], []
    for folder in folders:
        if names[folder] not in class_names:
            raise DataError(f"{folder}: class {names[folder]!r} is not one of {class_names}")
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(str(f))
                labels.append(class_names.index(names[folder]))
    if not paths:
        raise DataError(f"{root}: no image files in the class folders")
    return Split(split, class_names, np.array(labels), paths, reader=file_reader(paths))


SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


def read_image_folder(root: str | Path, class_names: tuple[str, ...] | None = None, seed: int = 0) -> Dataset:
    """``root/<class>/*`` or ``root/{train,val,test}/<class>/*``.

    Without split folders the images are split 80/10/10 (stratified, seeded) into train/val/test;
    without a val folder, 10 % of train (stratified, seeded) becomes val.
    """
    root = Path(root)
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
    split_dirs = {SPLIT_FOLDERS[k]: p for k, p in subdirs.items() if k in SPLIT_FOLDERS}
    if not split_dirs:
        full = read_class_folders(root, class_names, "all")
        rest, test = stratified_indices(full.labels, 0.1, seed)
        rest_split = full.subset(rest)
        fit, val = stratified_indices(rest_split.labels, 1 / 9, seed)
        splits = {
            "train": rest_split.subset(fit, "train"),
            "val": rest_split.subset(val, "val"),
            "test": full.subset(test, "test"),
        }
        return Dataset(root.name, splits, {r: r for r in splits}, str(root))
    if class_names is None:
        found = set()
        for p in split_dirs.values():
            found |= {folder_class(d) for d in p.iterdir() if d.is_dir()}
        class_names = tuple(sorted(found))
    splits = {role: read_class_folders(p, class_names, role) for role, p in split_dirs.items()}
    dataset = Dataset(root.name, splits, {r: r for r in splits}, str(root))
    if "val" not in splits and "train" in splits:
        dataset = dataset.with_validation_from_train(seed=seed)
    return dataset
