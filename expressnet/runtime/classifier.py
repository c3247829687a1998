"""``Classifier``: the backend-neutral face classifier that ``Recognizer``, ``evaluate``, ``predict`` and the HTTP
service use. It takes prepared crops (uint8 (N, C, S, S), as :func:`expressnet.data.to_model_input` makes them)
and returns logits (N, K) as a numpy array; class names, preprocessing and flip averaging come with it.

Backends (registry :data:`BACKENDS`): ``onnx`` (ONNX Runtime, an ``.onnx`` file; :mod:`expressnet.runtime.ort`,
no torch) and ``torch`` (a checkpoint or module, any precision; :mod:`expressnet.runtime.torch_backend`, imported
only when chosen). ``load_classifier(model, backend="auto")`` follows a fixed rule, never a timing: a shipped
model on a CPU runs the inference file its record names (:mod:`expressnet.hub`), a GPU device or a torch
precision other than fp32 runs torch, an ``.onnx`` file runs ONNX Runtime, a checkpoint or module runs torch. So
the same model gives the same answer on every run, whatever the machine's load. Every classifier names what it
runs in :meth:`Classifier.provenance` (model, file, sha256 prefix, backend, precision), which every output carries.

Thread safety: a ``Classifier`` may be shared by threads. The torch backend runs one batch at a time under a
lock (an ExpressNet module records its MoE routing during ``forward``, so a bare module is *not* safe to call
from several threads); ONNX Runtime sessions are safe to call concurrently.
"""

from __future__ import annotations

import importlib
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..data.prepare import Preprocessing
from ..hub import SHA_PREFIX, CheckpointError, get_record, shipped_name, shipped_onnx
from ..io import file_sha256
from ..registry import Registry

ModelSpec = Any  # a shipped name, a checkpoint or .onnx path, a loaded torch module, or None (the default model)
TORCH_PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, K) logits, computed in float64 (probabilities sum to 1)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def torch_part(module: str) -> Any:
    """``expressnet.runtime.<module>`` when it needs PyTorch, or an error naming the extra that brings it."""
    try:
        return importlib.import_module(f"expressnet.runtime.{module}")
    except ModuleNotFoundError as exc:
        if exc.name not in ("torch", "onnx", "onnxscript"):
            raise
        extra = "torch" if exc.name == "torch" else "export"
        raise CheckpointError(
            f"this needs the {extra} extra: pip install 'expressnet[{extra}]' ({exc.name} is missing)"
        ) from exc


def is_torch_module(model: Any) -> bool:
    """Whether ``model`` is a torch module (without importing torch: a module exists only if torch is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


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
        self.name = Path(source).name  # a shipped model's name when loaded by name (load_classifier sets it)
        self._sha256: str | None = None

    @property
    def precision(self) -> str:
        """The arithmetic of the weights run: "float32", "int8", "bfloat16" or "float16"."""
        return "float32"

    @abstractmethod
    def _batch_logits(self, images: np.ndarray, tta_flip: bool) -> np.ndarray:
        """Logits of one batch of uint8 crops, float32 (n, K)."""

    def logits(self, images: Any, tta_flip: bool | None = None) -> np.ndarray:
        """Logits (N, K) float32 of uint8 crops (N, C, S, S) (a numpy array or a torch tensor), in batches of
        ``batch_size``."""
        images = images.numpy() if not isinstance(images, np.ndarray) and hasattr(images, "numpy") else images
        images = np.asarray(images)
        self.check_input(images)
        flip = self.tta_flip if tta_flip is None else tta_flip
        if len(images) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        out = [
            self._batch_logits(images[i : i + self.batch_size], flip) for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(out).astype(np.float32, copy=False)

    def probabilities(self, images: Any, tta_flip: bool | None = None) -> np.ndarray:
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

    @property
    def sha256(self) -> str | None:
        """The sha256 of the file run (None for a module that was never saved)."""
        if self._sha256 is None and Path(self.source).is_file():
            self._sha256 = file_sha256(self.source)
        return self._sha256

    def provenance(self) -> dict[str, Any]:
        """What every output names: the model, the file run and the prefix of its sha256, backend, precision."""
        digest = self.sha256
        return {
            "name": self.name,
            "file": Path(self.source).name,
            "sha256": digest[:SHA_PREFIX] if digest else None,
            "backend": self.backend,
            "precision": self.precision,
        }

    def describe(self) -> dict[str, Any]:
        """What a service or report shows about the model."""
        meta = self.metadata
        return {
            **self.provenance(),
            "source": self.source,
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
        return (
            f"{type(self).__name__}({self.source!r}, classes={len(self.class_names)}, tta_flip={self.tta_flip}, "
            f"precision={self.precision!r})"
        )


BACKENDS: Registry[Callable[..., Classifier]] = Registry("classifier backend")
BACKENDS.register("onnx", "expressnet.runtime.ort:onnx_classifier")
BACKENDS.register("torch", "expressnet.runtime.torch_backend:torch_classifier")


def available_backends(model: ModelSpec) -> list[str]:
    """The backends that can run ``model`` without exporting anything: a module or checkpoint -> torch; an
    ``.onnx`` file -> onnx; a shipped name -> torch, and onnx when it ships an ONNX inference file."""
    if is_torch_module(model):
        return ["torch"]
    if str(model).endswith(".onnx"):
        return ["onnx"]
    return ["torch", "onnx"] if shipped_onnx(model) is not None else ["torch"]


def device_type(device: Any) -> str:
    """ "cpu", "cuda", "mps", ... of a device given as text or a torch device."""
    return str(getattr(device, "type", device)).split(":")[0]


def auto_backend(model: ModelSpec, device: Any = "cpu", precision: str = "fp32") -> str:
    """The fixed rule of ``backend="auto"`` (see the module docstring); never a timing."""
    if is_torch_module(model) or device_type(device) != "cpu" or precision != "fp32":
        return "torch"
    if str(model).endswith(".onnx"):
        return "onnx"
    name = shipped_name(model)
    return get_record(name).backend if name is not None else "torch"


def load_classifier(
    model: ModelSpec = None,
    backend: str = "auto",
    *,
    tta_flip: bool | None = None,
    precision: str = "fp32",
    batch_size: int = 64,
    device: Any = "cpu",
    threads: int | None = None,
) -> Classifier:
    """A :class:`Classifier` for a shipped model name, checkpoint, ``.onnx`` file or loaded module.

    ``backend``: "auto" (the fixed rule of :func:`auto_backend`: a shipped model's inference file on a CPU, torch
    on a GPU), "onnx" or "torch". A shipped model's file is checked against the sha256 its record holds.
    """
    if precision not in TORCH_PRECISIONS:
        raise ValueError(f"precision must be fp32, bf16 or fp16, not {precision!r}")
    chosen = auto_backend(model, device, precision) if backend == "auto" else backend
    if chosen == "torch" and str(model).endswith(".onnx"):
        raise CheckpointError(f"{model}: an ONNX file runs with backend 'onnx', not 'torch'")
    name = None if is_torch_module(model) else shipped_name(model)
    digest = None if name is None else verified_sha256(name, chosen)
    options = dict(tta_flip=tta_flip, precision=precision, batch_size=batch_size, device=device, threads=threads)
    try:
        factory = BACKENDS.get(chosen)
    except ModuleNotFoundError as exc:  # the torch backend without torch installed
        what = f"model {name!r} infers with torch" if name is not None else f"the {chosen} backend needs torch"
        raise CheckpointError(f"{what}: pip install 'expressnet[torch]' ({exc.name} is missing)") from exc
    classifier = factory(model, **options)
    if name is not None:
        classifier.name = name
        if digest is not None and Path(classifier.source).name in get_record(name).files:
            classifier._sha256 = digest
    return classifier


def verified_sha256(name: str, backend: str) -> str | None:
    """The sha256 of the shipped file ``backend`` will run for model ``name``, checked against its record before
    it is loaded (a damaged installation is named, not run); None when that file is not one of the record's."""
    record = get_record(name)
    path = (
        record.inference_path if backend == record.backend else record.checkpoint_path if backend == "torch" else None
    )
    if path is None or not path.is_file():
        return None
    digest, recorded = file_sha256(path), record.sha256(path.name)
    if digest != recorded:
        raise CheckpointError(
            f"{path}: its sha256 is not the one model {name!r} records ({recorded[:SHA_PREFIX]}); the installation "
            "is damaged: reinstall expressnet"
        )
    return digest
