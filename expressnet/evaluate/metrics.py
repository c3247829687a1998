"""Classification metrics (scikit-learn) and calibration."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)


def calibration_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> dict:
    """Equal-width confidence bins: per bin count, mean confidence and accuracy; ECE = weighted |acc - conf|."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    conf_sum = np.bincount(which, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(which, weights=correct.astype(float), minlength=n_bins)
    nz = counts > 0
    mean_conf = np.where(nz, conf_sum / np.maximum(counts, 1), 0.0)
    mean_acc = np.where(nz, acc_sum / np.maximum(counts, 1), 0.0)
    ece = float(np.sum(counts * np.abs(mean_acc - mean_conf)) / max(len(labels), 1))
    return {
        "edges": edges.tolist(),
        "count": counts.tolist(),
        "confidence": mean_conf.tolist(),
        "accuracy": mean_acc.tolist(),
        "ece": ece,
    }


def classification_metrics(probs: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...] | list[str]) -> dict:
    """accuracy, macro_f1, balanced_accuracy, per_class, confusion_matrix (rows = true), ece, calibration bins,
    nll, n."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    k = len(class_names)
    classes = list(range(k))
    pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(labels, pred, labels=classes, zero_division=0)
    present = np.unique(labels)
    bins = calibration_bins(probs, labels)
    return {
        "n": len(labels),
        "accuracy": float(accuracy_score(labels, pred)),
        "macro_f1": float(f1_score(labels, pred, labels=classes, average="macro", zero_division=0)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, pred))
        if len(present) > 1
        else float(np.mean(pred == labels)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(labels, pred, labels=classes).tolist(),
        "ece": bins["ece"],
        "calibration": bins,
        "nll": float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)))),
        "class_names": list(class_names),
    }
