"""Figures people would rather look at than read: curves, confusion matrices, calibration, data views."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..io import atomic_write


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png"))
    plt.close(fig)
    return out


def training_curves(history: Sequence[dict], path: str | Path) -> Path:
    """Accuracy and loss per epoch, train vs validation."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], label="train")
    ax_acc.plot(epochs, [h["val_accuracy"] for h in history], label="validation")
    if "val_macro_f1" in history[0]:
        ax_acc.plot(epochs, [h["val_macro_f1"] for h in history], "--", label="validation macro-F1")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train (with smoothing/mixing)")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], label="validation (NLL)")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def confusion_heatmap(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Row-normalised confusion matrix (recall per true class), counts in the cells."""
    cm = np.asarray(matrix, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 * k + 2, 0.9 * k + 1.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title or "Confusion matrix (row-normalised)")
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}\n{norm[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def reliability_diagram(bins: dict, path: str | Path, title: str = "") -> Path:
    """Accuracy vs confidence per bin, with the bin counts below."""
    edges = np.asarray(bins["edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    count = np.asarray(bins["count"])
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(5, 5.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.bar(centers, bins["accuracy"], width=width * 0.9, alpha=0.8, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(ylabel="accuracy", title=title or f"Reliability (ECE {bins['ece']:.3f})", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    axc.bar(centers, count, width=width * 0.9, color="gray")
    axc.set(xlabel="confidence", ylabel="images")
    return _save(fig, path)


def class_distribution(splits: dict[str, dict[str, int]], path: str | Path, title: str = "") -> Path:
    """Grouped bars: images per class for each split."""
    classes = list(next(iter(splits.values())))
    x = np.arange(len(classes))
    width = 0.8 / max(len(splits), 1)
    fig, ax = plt.subplots(figsize=(max(6, len(classes) * 1.1), 3.8))
    for i, (name, counts) in enumerate(splits.items()):
        values = [counts.get(c, 0) for c in classes]
        bars = ax.bar(x + i * width - 0.4 + width / 2, values, width, label=f"{name} ({sum(values):,})")
        ax.bar_label(bars, fontsize=6)
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set(ylabel="images", title=title or "Class distribution")
    ax.legend(fontsize=8)
    return _save(fig, path)


def intensity_histograms(hists: dict[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """Pixel value histograms (256 bins) per channel name ('gray' or 'R', 'G', 'B')."""
    colors = {"R": "tab:red", "G": "tab:green", "B": "tab:blue", "gray": "black"}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, h in hists.items():
        h = np.asarray(h, dtype=float)
        ax.plot(np.arange(256), h / max(h.sum(), 1), color=colors.get(name), label=name)
    ax.set(xlabel="pixel value", ylabel="fraction of pixels", title=title or "Intensity distribution")
    ax.legend(fontsize=8)
    return _save(fig, path)


def image_grid(images_per_class: dict[str, list[np.ndarray]], path: str | Path, title: str = "") -> Path:
    """One row of example images per class."""
    rows = len(images_per_class)
    cols = max((len(v) for v in images_per_class.values()), default=1)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.2), squeeze=False)
    for r, (name, imgs) in enumerate(images_per_class.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(imgs):
                img = imgs[c]
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
        axes[r][0].set_title(name, fontsize=8, loc="left")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def routing_heatmap(table: Sequence[Sequence[float]], class_names: Sequence[str], path: str | Path, title: str) -> Path:
    """Class x expert top-k load shares."""
    t = np.asarray(table, dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 * t.shape[1] + 2.5, 0.5 * t.shape[0] + 1.5))
    im = ax.imshow(t, cmap="viridis", vmin=0, vmax=max(0.5, float(t.max())))
    ax.set_xticks(range(t.shape[1]), [f"expert {e}" for e in range(t.shape[1])])
    ax.set_yticks(range(len(class_names)), class_names)
    for i in range(t.shape[0]):
        for j in range(t.shape[1]):
            ax.text(
                j,
                i,
                f"{t[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if t[i, j] < 0.35 else "black",
            )
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)
