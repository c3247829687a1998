"""Runtime: the backend-neutral :class:`Classifier` (torch, ONNX Runtime), batched logits with flip averaging
and autocast, the one softmax, and ONNX export. Below ``evaluate``, ``train`` and ``infer``."""

from .batched import autocast, predict_logits, softmax, to_float
from .classifier import BACKENDS, Classifier, TorchClassifier, available_backends, load_classifier

__all__ = [
    "BACKENDS",
    "Classifier",
    "TorchClassifier",
    "autocast",
    "available_backends",
    "load_classifier",
    "predict_logits",
    "softmax",
    "to_float",
]
