"""The common dataset interface: named splits of labelled face images, in memory or as files."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .labels import match_classes


class DataError(Exception):
    """A dataset problem a user can fix; the message names the file and the problem."""


@dataclass
class Split:
    """One split: labels, optional soft labels (N, C), and images held in memory or read on demand.

    ``images`` is an array (N, H, W) or (N, H, W, C) of uint8 when in memory; otherwise ``reader(i)``
    decodes image ``i`` (a file named by ``sources[i]``) as uint8 gray (H, W) or RGB (H, W, 3).
    """

    name: str
    class_names: tuple[str, ...]
    labels: np.ndarray
    sources: list[str]
    images: np.ndarray | None = None
    reader: Callable[[int], np.ndarray] | None = None
    soft_labels: np.ndarray | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # source -> reason, for unreadable/unlabelled items

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = len(self.labels)
        if len(self.sources) != n:
            raise ValueError(f"{self.name}: {n} labels but {len(self.sources)} sources")
        if self.images is None and self.reader is None:
            raise ValueError(f"{self.name}: needs images or a reader")
        if self.images is not None and len(self.images) != n:
            raise ValueError(f"{self.name}: {n} labels but {len(self.images)} images")
        if self.soft_labels is not None and self.soft_labels.shape != (n, len(self.class_names)):
            raise ValueError(f"{self.name}: soft labels must be ({n}, {len(self.class_names)})")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(f"{self.name}: labels outside 0..{len(self.class_names) - 1}")

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        return self.images[i] if self.images is not None else self.reader(i)

    def counts(self) -> dict[str, int]:
        bins = np.bincount(self.labels, minlength=len(self.class_names))
        return {c: int(k) for c, k in zip(self.class_names, bins)}

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> Split:
        idx = np.asarray(indices, dtype=np.int64)
        reader = None
        if self.reader is not None:
            parent = self.reader
            reader = lambda i: parent(int(idx[i]))  # noqa: E731
        return Split(
            name=name or self.name,
            class_names=self.class_names,
            labels=self.labels[idx],
            sources=[self.sources[i] for i in idx],
            images=None if self.images is None else self.images[idx],
            reader=reader,
            soft_labels=None if self.soft_labels is None else self.soft_labels[idx],
            skipped=dict(self.skipped),
        )

    def relabel(self, class_names: Sequence[str]) -> Split:
        """This split with labels re-indexed into another class order (a model's), classes matched by
        canonical name. ``DataError`` if a class that occurs here has no counterpart there."""
        class_names = tuple(class_names)
        mapping = match_classes(self.class_names, class_names)
        missing = [c for c, m in zip(self.class_names, mapping) if m is None]
        present = set(np.unique(self.labels).tolist())
        if any(self.class_names.index(c) in present for c in missing):
            raise DataError(f"{self.name}: classes {missing} are not predicted by the model (classes {class_names})")
        index = np.array([-1 if m is None else m for m in mapping], dtype=np.int64)
        soft = None
        if self.soft_labels is not None and not missing:
            soft = np.zeros((len(self), len(class_names)), dtype=np.float32)
            soft[:, index] = self.soft_labels
        return replace(self, class_names=class_names, labels=index[self.labels], soft_labels=soft)

    def fingerprint(self) -> str:
        """Short hash of sources and labels (and pixels when in memory): identifies exactly what was used."""
        h = hashlib.sha256()
        h.update("\n".join(self.sources).encode())
        h.update(self.labels.tobytes())
        if self.images is not None:
            h.update(np.ascontiguousarray(self.images).tobytes())
        return h.hexdigest()[:16]


def concat_splits(splits: Sequence[Split], name: str) -> Split:
    """Several splits of one dataset as one (e.g. FER-2013 PublicTest+PrivateTest, the paper's 7,178)."""
    first = splits[0]
    if any(s.class_names != first.class_names for s in splits):
        raise ValueError("cannot concatenate splits with different classes")
    if all(s.images is not None for s in splits) and len({s.images.shape[1:] for s in splits}) == 1:
        images, reader = np.concatenate([s.images for s in splits]), None
    else:
        offsets = np.cumsum([0] + [len(s) for s in splits])

        def reader(i: int) -> np.ndarray:
            j = int(np.searchsorted(offsets, i, side="right") - 1)
            return splits[j].image(i - int(offsets[j]))

        images = None
    soft = [s.soft_labels for s in splits]
    return Split(
        name=name,
        class_names=first.class_names,
        labels=np.concatenate([s.labels for s in splits]),
        sources=[src for s in splits for src in s.sources],
        images=images,
        reader=reader,
        soft_labels=None if any(x is None for x in soft) else np.concatenate(soft),
        skipped={k: v for s in splits for k, v in s.skipped.items()},
    )


def stratified_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split: (kept, held-out) index arrays with ``fraction`` of each class held out.

    Uses scikit-learn's ``train_test_split`` semantics (so a given seed reproduces published splits); tiny
    datasets hold out at least one image per class, and fall back to an unstratified split when some class
    has a single image.
    """
    try:
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # an optional dependency (the train extra)
        raise DataError(f"a stratified split needs scikit-learn: pip install 'expressnet[train]' ({exc})") from exc

    labels = np.asarray(labels)
    n, k = len(labels), len(np.unique(labels))
    test_size: float | int = fraction
    if math.ceil(fraction * n) < k:
        test_size = k
    counts = np.bincount(labels)
    stratify = labels if counts[counts > 0].min() >= 2 and n - math.ceil(fraction * n) >= k else None
    if n < 2 or (isinstance(test_size, int) and test_size >= n):
        raise DataError(f"{n} images are too few to hold out {fraction:.0%} per class")
    kept, held = train_test_split(np.arange(n), test_size=test_size, random_state=seed, stratify=stratify)
    return np.sort(kept), np.sort(held)


@dataclass
class Dataset:
    """A named dataset: its splits and which of them play the train/val/test roles."""

    name: str
    splits: dict[str, Split]
    roles: dict[str, str]  # role ("train", "val", "test") -> split name
    root: str = ""

    @property
    def class_names(self) -> tuple[str, ...]:
        return next(iter(self.splits.values())).class_names

    def split_names(self, name: str) -> list[str]:
        """The stored splits a split expression names: roles resolved, ``A+B`` expanded."""
        return [self.roles.get(p, p) for p in self.roles.get(name, name).split("+")]

    def split(self, name: str) -> Split:
        """A split by name or role; ``A+B`` concatenates splits (e.g. ``PublicTest+PrivateTest``)."""
        parts = self.split_names(name)
        missing = [p for p in parts if p not in self.splits]
        if missing:
            known = sorted(self.splits) + sorted(self.roles)
            raise DataError(f"{self.root or self.name}: no split {missing[0]!r}; available: {', '.join(known)}")
        if len(parts) == 1:
            return self.splits[parts[0]]
        return concat_splits([self.splits[p] for p in parts], "+".join(parts))

    def with_validation_from_train(self, fraction: float = 0.1, seed: int = 0) -> Dataset:
        """Hold out a stratified, seeded part of the train split as validation (for datasets without one). The
        two parts replace the train split (``<name>-fit`` and ``<name>-val``), so no image is counted twice."""
        train = self.split("train")
        kept, held = stratified_indices(train.labels, fraction, seed)
        splits = {name: split for name, split in self.splits.items() if name != train.name}
        splits[f"{train.name}-fit"] = train.subset(kept, f"{train.name}-fit")
        splits[f"{train.name}-val"] = train.subset(held, f"{train.name}-val")
        roles = {**self.roles, "train": f"{train.name}-fit", "val": f"{train.name}-val"}
        return Dataset(self.name, splits, roles, self.root)


def combine_datasets(datasets: Sequence[Dataset], name: str | None = None) -> Dataset:
    """Several datasets as one (e.g. FER-2013 and RAF-DB, to train one model on both). Every split is kept under
    ``<dataset>:<split>``, labels re-indexed into the first dataset's class order (classes matched by name); each
    role (train, val, test, and any other role all of them share) is the concatenation of the datasets' splits in
    that role. Every dataset needs a train, a val and a test split (a held-out val, for those without one)."""
    first = datasets[0]
    classes = first.class_names
    splits: dict[str, Split] = {}
    shared = [role for role in first.roles if all(role in ds.roles for ds in datasets)]
    roles: dict[str, list[str]] = {role: [] for role in shared}
    for ds in datasets:
        missing = [role for role in ("train", "val", "test") if role not in ds.roles]
        if missing:
            raise DataError(f"{ds.root or ds.name}: no {missing[0]!r} split to combine with other datasets")
        for split_name, split in ds.splits.items():
            key = f"{ds.name}:{split_name}"
            if key in splits:
                raise DataError(f"{ds.root or ds.name}: dataset {ds.name!r} is named twice")
            splits[key] = replace(split.relabel(classes), name=key)
        for role in roles:
            roles[role] += [f"{ds.name}:{part}" for part in ds.split_names(role)]
    combined = name or "+".join(ds.name for ds in datasets)
    return Dataset(
        combined,
        splits,
        {role: "+".join(parts) for role, parts in roles.items()},
        " + ".join(ds.root or ds.name for ds in datasets),
    )
