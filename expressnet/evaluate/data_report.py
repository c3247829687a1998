"""``expressnet data-report``: counts per split and class, class-distribution chart, pixel histograms, grids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data import Dataset
from ..data.base import DataError
from ..data.images import to_channels
from ..io import atomic_write_text
from . import plots


def _sample(n: int, k: int, seed: int = 0) -> np.ndarray:
    return np.arange(n) if n <= k else np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


def data_report(
    dataset: Dataset, out_dir: str | Path | None = None, histogram_images: int = 3000, grid_per_class: int = 8
) -> dict:
    """Counts (JSON-ready) and, with ``out_dir``, the figures. Histograms use a seeded sample of images."""
    report = {
        "dataset": dataset.name,
        "source": dataset.root,
        "classes": list(dataset.class_names),
        "roles": dataset.roles,
        "splits": {name: s.counts() for name, s in dataset.splits.items()},
        "totals": {name: len(s) for name, s in dataset.splits.items()},
        "skipped": {name: len(s.skipped) for name, s in dataset.splits.items()},
    }
    if out_dir is None:
        return report
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots.class_distribution(
        report["splits"], out / "class_distribution.png", f"{dataset.name}: images per class and split"
    )
    unreadable = 0
    for name, split in dataset.splits.items():
        hist: dict[str, np.ndarray] = {}
        for i in _sample(len(split), histogram_images):
            try:
                img = split.image(int(i))
            except DataError:
                unreadable += 1
                continue
            chans = {"gray": img} if img.ndim == 2 else {c: img[..., j] for j, c in enumerate("RGB")}
            for c, a in chans.items():
                hist[c] = hist.get(c, 0) + np.bincount(a.ravel(), minlength=256)
        if hist:
            plots.intensity_histograms(hist, out / f"intensity_{name}.png", f"{dataset.name} {name}: pixel values")
    train = dataset.split("train") if "train" in dataset.roles else next(iter(dataset.splits.values()))
    grid = {}
    for k, cls in enumerate(train.class_names):
        idx = np.flatnonzero(train.labels == k)[:grid_per_class]
        imgs = []
        for i in idx:
            try:
                imgs.append(to_channels(train.image(int(i)), 3 if train.image(int(i)).ndim == 3 else 1))
            except DataError:
                unreadable += 1
        grid[f"{cls} ({len(np.flatnonzero(train.labels == k)):,})"] = imgs
    plots.image_grid(grid, out / "examples.png", f"{dataset.name} {train.name}: examples per class")
    report["unreadable_in_figures"] = unreadable
    atomic_write_text(out / "data_report.json", json.dumps(report, indent=1))
    return report
