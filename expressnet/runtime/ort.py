"""The ``onnx`` classifier backend: an ``.onnx`` file from ``expressnet export`` run by ONNX Runtime on the CPU.
Needs onnxruntime only (no torch, no onnx package): the file's ExpressNet metadata (classes, preprocessing,
tta_flip, weights precision, source sha256) is read through the session.

The graph's input ``images`` is float32 (N, C, S, S) in [0, 1]; its output ``logits`` (N, K), with the
temperature already folded in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.prepare import Preprocessing
from ..hub import CheckpointError, resolve_inference, shipped_name
from .classifier import Classifier, ModelSpec, device_type, is_torch_module, torch_part

FORMAT = "expressnet-onnx/1"
META_KEY = "expressnet"
INPUT, OUTPUT = "images", "logits"

# ONNX Runtime's QDQ propagation moves each QuantizeLinear up through the MaxPool before it, so the pool runs on
# uint8 in NCHW with the scalar kernel instead of on float in the vectorised NCHWc layout. Measured in one run on
# the 2-core CPU at batch 64, the first shipped fer2013-fast.int8.onnx: 2,066 faces/s with it, 4,221 without.
DISABLED_OPTIMIZERS = ["QDQPropagationTransformer"]


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:  # a core dependency; a broken installation
        raise CheckpointError(f"ONNX models need onnxruntime: pip install onnxruntime ({exc})") from exc
    return onnxruntime


def cpu_session(path: str | Path, threads: int | None = None, parallel: int = 0, optimize: bool = True):
    """An ONNX Runtime CPU session for ``path`` with every graph optimisation but :data:`DISABLED_OPTIMIZERS`
    (none with ``optimize=False``), on ``threads`` intra-op threads (None: ONNX Runtime's choice); ``parallel`` > 0
    runs independent nodes on that many threads of the parallel executor instead, one intra-op thread each
    (benchmarks/fast_variants.py measures it). ``CheckpointError`` naming the file when it cannot load it."""
    ort = import_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX file not found")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: a user sees our message, not ONNX Runtime's warnings
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if parallel:
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        options.intra_op_num_threads, options.inter_op_num_threads = 1, parallel
    elif threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    try:
        return ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=DISABLED_OPTIMIZERS
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise CheckpointError(f"{path}: not an ONNX file ONNX Runtime can load ({type(exc).__name__}: {exc})") from exc


def session_metadata(session, path: str | Path) -> dict[str, Any]:
    """The ExpressNet metadata an exported file carries, read through its session."""
    props = session.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise CheckpointError(f"{path}: no ExpressNet metadata (export it with `expressnet export`)")
    meta = json.loads(props[META_KEY])
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported ONNX metadata format {meta.get('format')!r} (expected {FORMAT})")
    return meta


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ExpressNet metadata of an ONNX file (classes, preprocessing, tta_flip, weights, source sha256, ...)."""
    return session_metadata(cpu_session(path, threads=1, optimize=False), path)


class OnnxClassifier(Classifier):
    """An ``.onnx`` file from ``expressnet export`` run by ONNX Runtime (CPU). Safe to call from several threads."""

    backend = "onnx"

    def __init__(
        self, path: str | Path, *, tta_flip: bool | None = None, batch_size: int = 64, threads: int | None = None
    ) -> None:
        self.session = cpu_session(path, threads)
        meta = session_metadata(self.session, path)
        super().__init__(
            tuple(meta["class_names"]),
            Preprocessing.from_dict(meta["preprocessing"]),
            meta,
            str(path),
            tta_flip,
            batch_size,
        )

    @property
    def precision(self) -> str:
        return "int8" if str(self.metadata.get("weights", "")).startswith("int8") else "float32"

    def _batch_logits(self, images: np.ndarray, tta_flip: bool) -> np.ndarray:
        x = images.astype(np.float32) / np.float32(255.0)
        if tta_flip:
            both = self.session.run([OUTPUT], {INPUT: np.concatenate([x, x[..., ::-1]])})[0]
            return (both[: len(x)] + both[len(x) :]) / 2
        return self.session.run([OUTPUT], {INPUT: x})[0]


def onnx_classifier(
    model: ModelSpec,
    *,
    tta_flip: bool | None = None,
    precision: str = "fp32",
    batch_size: int = 64,
    device: Any = "cpu",
    threads: int | None = None,
) -> OnnxClassifier:
    """The ``onnx`` backend: an ``.onnx`` file, a shipped model's ONNX inference file, or a checkpoint exported to
    float32 ONNX on first use (that export needs torch: :func:`expressnet.runtime.onnx.cached_export`)."""
    if is_torch_module(model):
        raise ValueError("the onnx backend runs files; export the module with expressnet.runtime.onnx.export_onnx")
    if device_type(device) != "cpu":
        raise ValueError(f"the onnx backend runs on the CPU, not {device}")
    if precision != "fp32":
        raise ValueError(f"the onnx backend runs the file's own precision; precision {precision!r} is torch's")
    if str(model).endswith(".onnx"):
        path = Path(str(model))
    elif shipped_name(model) is not None:
        record, path = resolve_inference(model)
        if record.backend != "onnx":
            path = torch_part("onnx").cached_export(model)  # a shipped model without an ONNX file
    else:
        path = torch_part("onnx").cached_export(model)
    return OnnxClassifier(path, tta_flip=tta_flip, batch_size=batch_size, threads=threads)
