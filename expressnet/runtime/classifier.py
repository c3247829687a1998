"""``Classifier``: the backend-neutral face classifier that ``Recognizer``, ``evaluate``, ``predict`` and the HTTP
service use. It takes prepared crops (uint8 (N, C, S, S), as :func:`expressnet.data.to_model_input` makes them)
and returns logits (N, K) as a numpy array; class names, preprocessing and flip averaging come with it.

Backends (registry :data:`BACKENDS`): ``torch`` (a checkpoint or module, any precision) and ``onnx``
(ONNX Runtime, an ``.onnx`` file from ``expressnet export``). ``load_classifier(model, backend="auto")`` picks
the fastest available backend by timing each on a batch at load.

Thread safety: a ``Classifier`` may be shared by threads. The torch backend runs one batch at a time under a
lock (an ExpressNet module records its MoE routing during ``forward``, so a bare module is *not* safe to call
from several threads); ONNX Runtime sessions are safe to call concurrently.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import CheckpointError
from ..data.prepare import Preprocessing
from ..hub import load_model, resolve_model, shipped_onnx
from ..registry import Registry
from .batched import predict_logits, softmax

ModelSpec = str | Path | nn.Module | None


class Classifier(ABC):
    """Prepared face crops -> logits. ``tta_flip`` defaults to what the model was trained for."""

    backend: str = "?"

    def __init__(
        self,
        class_names: tuple[str, ...],
        preprocessing: Preprocessing,
        metadata: dict[str, Any],
        source: str,
        tta_flip: bool | None = None,
        batch_size: int = 64,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.class_names = tuple(class_names)
        self.preprocessing = preprocessing
        self.metadata = metadata
        self.source = source
        self.tta_flip = bool(metadata.get("tta_flip", False)) if tta_flip is None else bool(tta_flip)
        self.batch_size = batch_size
        self.selection: dict[str, float] | None = None  # images/s per backend when chosen by "auto"

    @abstractmethod
    def _batch_logits(self, images: np.ndarray, tta_flip: bool) -> np.ndarray:
        """Logits of one batch of uint8 crops, float32 (n, K)."""

    def logits(self, images: np.ndarray | torch.Tensor, tta_flip: bool | None = None) -> np.ndarray:
        """Logits (N, K) float32 of uint8 crops (N, C, S, S), in batches of ``batch_size``."""
        images = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        self.check_input(images)
        flip = self.tta_flip if tta_flip is None else tta_flip
        if len(images) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        out = [
            self._batch_logits(images[i : i + self.batch_size], flip) for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(out).astype(np.float32, copy=False)

    def probabilities(self, images: np.ndarray | torch.Tensor, tta_flip: bool | None = None) -> np.ndarray:
        """Class probabilities (N, K), rows summing to 1."""
        return softmax(self.logits(images, tta_flip))

    def check_input(self, images: np.ndarray) -> None:
        pre = self.preprocessing
        expected = (pre.channels, pre.input_size, pre.input_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected or images.dtype != np.uint8:
            raise ValueError(
                f"{self.source}: expected uint8 crops (N, {', '.join(map(str, expected))}), "
                f"got {images.dtype} {tuple(images.shape)}"
            )

    def describe(self) -> dict[str, Any]:
        """What a service or report shows about the model."""
        meta = self.metadata
        return {
            "source": self.source,
            "backend": self.backend,
            "classes": list(self.class_names),
            "preprocessing": self.preprocessing.to_dict(),
            "tta_flip": self.tta_flip,
            "preset": meta.get("preset"),
            "weights": meta.get("weights"),
            "temperature": meta.get("temperature", 1.0),
            "logit_bias": meta.get("logit_bias"),
            "metrics": meta.get("metrics", {}).get("packed") or meta.get("metrics"),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, classes={len(self.class_names)}, tta_flip={self.tta_flip})"


class TorchClassifier(Classifier):
    """A torch module (from :func:`expressnet.hub.load_model`) behind a lock; ``precision``: fp32, bf16, fp16."""

    backend = "torch"

    def __init__(
        self,
        module: nn.Module,
        *,
        tta_flip: bool | None = None,
        precision: str = "fp32",
        batch_size: int = 64,
        device: str | torch.device | None = None,
    ) -> None:
        for attribute in ("class_names", "preprocessing", "metadata"):
            if not hasattr(module, attribute):
                raise ValueError(f"the module has no .{attribute}: load it with expressnet.load_model")
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, not {precision!r}")
        super().__init__(
            module.class_names,
            module.preprocessing,
            module.metadata,
            getattr(module, "source", type(module).__name__),
            tta_flip,
            batch_size,
        )
        if device is not None:
            module = module.to(device)
        self.module = module.eval()
        self.precision = precision
        self.device = next(module.parameters()).device
        self._lock = threading.Lock()

    def _batch_logits(self, images: np.ndarray, tta_flip: bool) -> np.ndarray:
        with self._lock:
            logits = predict_logits(
                self.module, torch.from_numpy(np.ascontiguousarray(images)), len(images), tta_flip, self.precision
            )
        return logits.numpy()


BACKENDS: Registry[Callable[..., Classifier]] = Registry("classifier backend")


@BACKENDS.register("torch")
def torch_classifier(
    model: ModelSpec,
    *,
    tta_flip: bool | None = None,
    precision: str = "fp32",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    threads: int | None = None,
) -> TorchClassifier:
    module = model if isinstance(model, nn.Module) else load_model(model, device)
    if threads:
        torch.set_num_threads(threads)
    return TorchClassifier(module, tta_flip=tta_flip, precision=precision, batch_size=batch_size, device=device)


BACKENDS.register("onnx", "expressnet.runtime.onnx:onnx_classifier")


def available_backends(model: ModelSpec) -> list[str]:
    """The backends that can run ``model`` here without building anything: a module or checkpoint -> torch;
    an ``.onnx`` file -> onnx; a shipped name -> torch, and onnx when its ONNX file ships and onnxruntime
    imports."""
    if isinstance(model, nn.Module):
        return ["torch"]
    if str(model).endswith(".onnx"):
        return ["onnx"]
    out = ["torch"]
    if shipped_onnx(model) is not None and onnxruntime_available():
        out.append("onnx")
    return out


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401 (an optional dependency: the `export` extra)
    except ImportError:
        return False
    return True


_AUTO_CHOICE: dict[tuple, tuple[str, dict[str, float]]] = {}
_AUTO_LOCK = threading.Lock()


def measure(classifiers: dict[str, Classifier], batch: int = 64, rounds: int = 5) -> dict[str, float]:
    """Images/s of each classifier on the same random crops (with its flip averaging): the best of ``rounds``
    after a warm-up call, timed in alternating rounds so that a busy CPU slows every candidate alike."""
    first = next(iter(classifiers.values()))
    pre = first.preprocessing
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, pre.channels, pre.input_size, pre.input_size), dtype=np.uint8)
    best = dict.fromkeys(classifiers, float("inf"))
    for classifier in classifiers.values():
        classifier.logits(images)
    for _ in range(rounds):
        for name, classifier in classifiers.items():
            start = time.perf_counter()
            classifier.logits(images)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: batch / seconds for name, seconds in best.items()}


def load_classifier(
    model: ModelSpec = None,
    backend: str = "auto",
    *,
    tta_flip: bool | None = None,
    precision: str = "fp32",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    threads: int | None = None,
) -> Classifier:
    """A :class:`Classifier` for a shipped model name, checkpoint, ``.onnx`` file or loaded module.

    ``backend``: "torch", "onnx" or "auto" (the fastest of :func:`available_backends`, timed once per process
    for each model, batch size and thread count; the figures are kept in ``.selection``). A GPU ``device`` or a
    ``precision`` other than fp32 means torch.
    """
    options = dict(tta_flip=tta_flip, precision=precision, batch_size=batch_size, device=device, threads=threads)
    if backend != "auto":
        if backend == "torch" and str(model).endswith(".onnx"):
            raise CheckpointError(f"{model}: an ONNX file runs with backend 'onnx', not 'torch'")
        return BACKENDS.get(backend)(model, **options)
    candidates = available_backends(model)
    if torch.device(device).type != "cpu" or precision != "fp32":
        candidates = [c for c in candidates if c == "torch"] or candidates
    if len(candidates) == 1:
        return BACKENDS.get(candidates[0])(model, **options)
    key = (str(resolve_model(model)), batch_size, threads or torch.get_num_threads(), tta_flip)
    with _AUTO_LOCK:
        if key in _AUTO_CHOICE:
            choice, speeds = _AUTO_CHOICE[key]
            classifier = BACKENDS.get(choice)(model, **options)
        else:
            built = {name: BACKENDS.get(name)(model, **options) for name in candidates}
            speeds = measure(built, batch_size)
            choice = max(speeds, key=speeds.get)
            _AUTO_CHOICE[key] = (choice, speeds)
            classifier = built[choice]
    classifier.selection = speeds
    return classifier
