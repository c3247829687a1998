"""Our metrics agree with scikit-learn and with hand computations."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
)

from expressnet.evaluate.metrics import calibration_bins, classification_metrics


def test_against_sklearn():
    rng = np.random.default_rng(0)
    k, n = 7, 500
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[labels] * (rng.random(n) < 0.6)[:, None]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = probs.argmax(1)
    names = [f"c{i}" for i in range(k)]
    m = classification_metrics(probs, labels, names)
    assert m["n"] == n
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(labels, pred, average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, pred))
    assert m["confusion_matrix"] == confusion_matrix(labels, pred).tolist()
    for i, name in enumerate(names):
        assert m["per_class"][name]["precision"] == pytest.approx(
            precision_score(labels, pred, labels=[i], average="macro")
        )
        assert m["per_class"][name]["recall"] == pytest.approx(recall_score(labels, pred, labels=[i], average="macro"))
        assert m["per_class"][name]["support"] == int((labels == i).sum())
    assert m["nll"] == pytest.approx(-np.mean(np.log(probs[np.arange(n), labels])))


def test_absent_class_counts_in_macro_f1_as_zero():
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    m = classification_metrics(probs, np.array([0, 1]), ["a", "b", "c"])
    assert m["accuracy"] == 1.0
    assert m["macro_f1"] == pytest.approx(2 / 3)  # class c has no support and no predictions


def test_ece_by_hand():
    # two bins used: confidence 0.95 (2 samples, 1 correct) and 0.55 (2 samples, 2 correct)
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.45, 0.55]])
    labels = np.array([0, 1, 0, 1])
    bins = calibration_bins(probs, labels, n_bins=10)
    expected = (2 * abs(0.5 - 0.95) + 2 * abs(1.0 - 0.55)) / 4
    assert bins["ece"] == pytest.approx(expected)
    assert sum(bins["count"]) == 4
