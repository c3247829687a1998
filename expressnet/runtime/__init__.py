"""Runtime: the backend-neutral :class:`Classifier` and its fixed backend rule, ONNX Runtime inference (no torch),
the torch backend, batched logits with flip averaging and autocast, the one softmax, and ONNX export. Below
``evaluate``, ``train`` and ``infer``.

The torch parts (``TorchClassifier``, ``predict_logits``, ``autocast``, ``to_float``) are imported on first use,
so ``from expressnet.runtime import load_classifier`` works without torch installed."""

from __future__ import annotations

import importlib
from typing import Any

from .classifier import BACKENDS, Classifier, auto_backend, available_backends, load_classifier, softmax

__all__ = [
    "BACKENDS",
    "Classifier",
    "TorchClassifier",
    "auto_backend",
    "autocast",
    "available_backends",
    "load_classifier",
    "predict_logits",
    "softmax",
    "to_float",
]

_LAZY = {
    "TorchClassifier": "expressnet.runtime.torch_backend",
    "autocast": "expressnet.runtime.batched",
    "predict_logits": "expressnet.runtime.batched",
    "to_float": "expressnet.runtime.batched",
}


def __getattr__(name: str) -> Any:
    """The torch parts, imported on first use (they import torch)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'expressnet.runtime' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
