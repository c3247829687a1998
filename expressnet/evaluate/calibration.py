"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017), and its
bias-corrected form (BCTS: Alexandari et al., "Maximum Likelihood with Bias-Corrected Calibration is
Hard-To-Beat at Label Shift Adaptation", ICML 2020).

One scalar ``T`` divides the logits: the predicted class never changes, only the confidence. BCTS adds one bias
per class, ``logits / T + b``: it corrects the class priors a model learned (from a distillation teacher's
softened targets, a class-weighted loss, another dataset's mix), so it can change predictions; how much that
helps is measured on held-out folds of the validation split (:func:`bias_gain`). Both are fitted on a
validation split (never the test split) by minimising the negative log-likelihood of the true labels. Folding
them into a model is :func:`expressnet.checkpoint.fold_temperature` and
:func:`expressnet.checkpoint.add_logit_bias` (they change weights, so they live with checkpoint loading).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize, minimize_scalar

BOUNDS = (0.05, 20.0)


def _checked(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"need logits (N, K) and N labels with N > 0, got {tuple(logits.shape)} and {len(labels)}")
    return logits.double(), labels.long()


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature in ``BOUNDS`` that minimises the NLL of ``softmax(logits / T)`` for ``labels``."""
    logits, labels = _checked(logits, labels)

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels))

    best = minimize_scalar(nll, bounds=tuple(math.log(b) for b in BOUNDS), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(best.x))


def fit_bias_corrected_temperature(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, list[float]]:
    """BCTS: the temperature (in ``BOUNDS``) and per-class biases (summing to 0) that minimise the NLL of
    ``softmax(logits / T + b)`` for ``labels``, fitted jointly (L-BFGS-B, exact gradients)."""
    logits, labels = _checked(logits, labels)
    k = logits.shape[1]

    def nll(params: np.ndarray) -> tuple[float, np.ndarray]:
        p = torch.tensor(params, dtype=torch.float64, requires_grad=True)
        loss = F.cross_entropy(logits / torch.exp(p[0]) + p[1:], labels)
        loss.backward()
        return float(loss.detach()), p.grad.numpy().copy()

    start = np.zeros(k + 1)
    start[0] = math.log(fit_temperature(logits, labels))
    bounds = [tuple(math.log(b) for b in BOUNDS)] + [(-20.0, 20.0)] * k
    best = minimize(nll, start, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 500})
    bias = best.x[1:] - best.x[1:].mean()  # softmax ignores a common shift
    return float(math.exp(best.x[0])), [float(b) for b in bias]


def bias_gain(logits: torch.Tensor, labels: torch.Tensor, repeats: int = 5, seed: int = 0) -> tuple[float, float]:
    """What the class biases of BCTS add to top-1 accuracy on data they were not fitted on: the validation split
    halved at random ``repeats`` times, fitted on each half and scored on the other; mean and standard deviation
    of the gain (a fraction; the temperature alone changes no prediction)."""
    logits, labels = _checked(logits, labels)
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(repeats):
        order = torch.from_numpy(rng.permutation(len(labels)))
        halves = order[: len(order) // 2], order[len(order) // 2 :]
        for fit, held in (halves, halves[::-1]):
            t, b = fit_bias_corrected_temperature(logits[fit], labels[fit])
            adjusted = logits[held] / t + torch.tensor(b, dtype=logits.dtype)
            before = (logits[held].argmax(1) == labels[held]).double().mean()
            gains.append(float((adjusted.argmax(1) == labels[held]).double().mean() - before))
    return float(np.mean(gains)), float(np.std(gains))
