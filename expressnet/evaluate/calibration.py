"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017).

One scalar ``T`` divides the logits: the predicted class never changes, only the confidence. ``T`` is fitted
on a validation split (never the test split) by minimising the negative log-likelihood of the true labels.
Folding ``T`` into a model is :func:`expressnet.checkpoint.fold_temperature` (it changes weights, so it lives
with checkpoint loading).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

BOUNDS = (0.05, 20.0)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature in ``BOUNDS`` that minimises the NLL of ``softmax(logits / T)`` for ``labels``."""
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"need logits (N, K) and N labels with N > 0, got {tuple(logits.shape)} and {len(labels)}")
    logits, labels = logits.double(), labels.long()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels))

    best = minimize_scalar(nll, bounds=tuple(math.log(b) for b in BOUNDS), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(best.x))
