"""ONNX export and the ONNX Runtime backend.

``export_onnx(model, "model.onnx")`` writes a graph with a dynamic batch axis (input ``images``: float32
(N, C, S, S) in [0, 1]; output ``logits``), with the model's metadata in ``metadata_props["expressnet"]``
(classes, preprocessing, tta_flip, the temperature already folded into the weights, the source weights'
sha256). ``int8=True`` adds static int8 quantisation (QDQ, per-channel weights) calibrated on images the caller
gives, which must come from a training split (see :func:`calibration_images`).

Needs the ``export`` extra (onnx, onnxruntime).
"""

from __future__ import annotations

import copy
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..checkpoint import CheckpointError
from ..data import load_dataset, prepare_split
from ..data.prepare import Preprocessing
from ..hub import load_model, resolve_model, shipped_onnx
from ..io import atomic_output, cache_root, file_sha256, refuse_existing
from ..nn import rewrite
from ..nn.modes import eval_mode
from .batched import to_float
from .classifier import Classifier, ModelSpec

FORMAT = "expressnet-onnx/1"
META_KEY = "expressnet"
INPUT, OUTPUT = "images", "logits"
OPSET = 17


def onnx_module():
    return _require_onnx()[0]


def _require_onnx():
    try:
        import onnx  # optional dependency: the export extra
        import onnxruntime
    except ImportError as exc:
        raise CheckpointError(
            f"ONNX support needs the export extra: pip install 'expressnet[export]' ({exc.name} is missing)"
        ) from exc
    return onnx, onnxruntime


def onnx_metadata(model: nn.Module, weights: str) -> dict[str, Any]:
    """What an ONNX file carries about the model it was exported from."""
    meta = model.metadata
    source = getattr(model, "source", None)
    return {
        "format": FORMAT,
        "package_version": __version__,
        "class_names": list(model.class_names),
        "preprocessing": model.preprocessing.to_dict(),
        "tta_flip": bool(meta.get("tta_flip", False)),
        "temperature": meta.get("temperature", 1.0),
        "temperature_folded": True,
        "logit_bias": meta.get("logit_bias"),  # folded too, where the checkpoint has one (BCTS)
        "weights": weights,
        "preset": meta.get("preset"),
        "source": str(source) if source else None,
        "source_sha256": file_sha256(source) if source and Path(source).is_file() else None,
        "metrics": meta.get("metrics", {}),
        "data": meta.get("data", {}),
    }


def _set_metadata(onnx_model, meta: dict[str, Any]) -> None:
    del onnx_model.metadata_props[:]
    entry = onnx_model.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta, default=str)


class _LogitsOnly(nn.Module):
    """The model's ``forward(x) -> logits`` alone, for tracing."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def export_onnx(
    model: nn.Module,
    target: str | Path,
    int8: bool = False,
    calibration: np.ndarray | None = None,
    opset: int = OPSET,
    keep_float: tuple[str, ...] | None = None,
    space_to_depth: bool | None = None,
    norm_after_pool: bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Export ``model`` (from :func:`expressnet.load_model`) to ``target``; with ``int8``, quantise it statically
    on ``calibration`` (uint8 crops (N, C, S, S) from a training split). Nodes whose name starts with one of
    ``keep_float`` (e.g. ``"/model/head"``) stay float; ``None`` keeps :data:`KEEP_FLOAT` float where the graph
    has those nodes, ``()`` quantises every layer but those reading the image. ``space_to_depth`` exports the
    first global unit through the exact rewrite of :mod:`expressnet.nn.rewrite` (``None``: where it pays);
    ``norm_after_pool`` moves each pooled unit's BatchNorm after its pool, to the bit the same outputs (``None``:
    where it applies). Either as ``True`` where it does not apply is a ValueError. The file appears whole or not
    at all (a ``target`` that exists is refused first unless ``overwrite``, :class:`~expressnet.io.OutputExists`);
    ``model`` keeps its mode (training or eval), dtype and device."""
    refuse_existing(target, overwrite=overwrite)
    onnx, _ = _require_onnx()
    if int8 and (calibration is None or len(calibration) == 0):
        raise ValueError("int8 export needs calibration images (uint8 crops from a training split)")
    float_prefixes = KEEP_FLOAT if keep_float is None else keep_float
    pre: Preprocessing = model.preprocessing
    param = next(model.parameters())
    if param.dtype != torch.float32 or param.device.type != "cpu":
        model = copy.deepcopy(model).float().cpu()  # the caller's module keeps its dtype and device
    rewrites = []  # each a copy, the same function; ValueError where it does not apply
    if rewrite.space_to_depth_pays(model) if space_to_depth is None else space_to_depth:
        model = rewrite.space_to_depth_first_unit(model)
        rewrites.append("space_to_depth_global_0")
    if rewrite.norm_after_pool_applies(model) if norm_after_pool is None else norm_after_pool:
        model = rewrite.norm_after_pool(model)
        rewrites.append("norm_after_pool")
    dummy = torch.zeros(2, pre.channels, pre.input_size, pre.input_size)
    with tempfile.TemporaryDirectory(prefix="expressnet-onnx-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        with eval_mode(model), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the MoE's routing record, not in the graph
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: handles our MoE's topk
            torch.onnx.export(
                _LogitsOnly(model).eval(),  # the exporter restores the wrapper's mode afterwards
                (dummy,),
                str(fp32),
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
        final = fp32
        if int8:
            final = Path(tmp) / "int8.onnx"
            _quantize(fp32, final, calibration, Path(tmp), float_prefixes, strict=keep_float is not None)
        graph = onnx.load(str(final))
        meta = onnx_metadata(model, "int8-qdq-per-channel" if int8 else "float32")
        if int8:  # besides the convolutions that read the image
            meta["keep_float"] = list(float_prefixes)
        meta["rewrites"] = rewrites
        _set_metadata(graph, meta)
        with atomic_output(target) as out:
            onnx.save(graph, str(out))
    return Path(target)


# Layers an int8 export keeps float by default: the global branch's convolutions and the backbone's first stage,
# the finest-resolution layers after the image. Chosen with scripts/int8_exclusions.py --split PublicTest
# (validation), int8 top-1 agreement with torch: fer2013 98.61 % with every layer quantised -> 99.50 % (8.3 MB
# instead of 7.9); the same two groups came first for fer2013-fast on held-out Training images (98.68 -> 99.17 %).
KEEP_FLOAT = ("/model/global_branch/convs", "/model/backbone/layer1")


def _quantize(
    source: Path, target: Path, calibration: np.ndarray, tmp: Path, keep_float: tuple[str, ...], strict: bool
) -> None:
    """Static int8 QDQ quantisation; nodes named ``keep_float*`` stay float (``strict``: a prefix matching no node
    is an error)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, images: np.ndarray, batch: int = 32) -> None:
            # equal batches only: the percentile calibrator stacks its per-batch tensors (a short last batch
            # would make them ragged), so a remainder beyond the last full batch is left out
            batch = min(batch, len(images))
            usable = len(images) - len(images) % batch
            self.batches = iter(
                [to_float(torch.from_numpy(images[i : i + batch])).numpy() for i in range(0, usable, batch)]
            )

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {INPUT: x}

    prepared = tmp / "prepared.onnx"
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    # Measured on the shipped fer2013 model, PublicTest top-1 agreement with torch (flip averaging): all
    # Conv/Gemm/MatMul, min-max ranges, 512 images: 97.6 %; convolutions only: 97.7 % (but dense weights in
    # float make the file 47 % larger); percentile ranges: 98.1 %; percentile with 1,024 images: 98.6 %;
    # accuracy within 0.2 pt in each case. The convolutions that read the image stay float (tiny, sensitive).
    graph = onnx_module().load(str(prepared))
    image = {INPUT}  # the image and its rearrangements (the space-to-depth rewrite's Reshape/Transpose)
    for node in graph.graph.node:  # in topological order
        if node.op_type in ("Reshape", "Transpose") and node.input and node.input[0] in image:
            image.update(node.output)
    first = [n.name for n in graph.graph.node if n.op_type == "Conv" and image.intersection(n.input)]
    for prefix in keep_float:
        matched = [n.name for n in graph.graph.node if n.name.startswith(prefix)]
        if not matched and strict:
            raise ValueError(
                f"keep float {prefix!r}: no node of the graph starts so (names look like /model/head/Gemm)"
            )
        first += matched
    quantize_static(
        str(prepared),
        str(target),
        Reader(calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        op_types_to_quantize=["Conv", "Gemm", "MatMul"],
        nodes_to_exclude=first,
        calibrate_method=CalibrationMethod.Percentile,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


def calibration_images(
    pre: Preprocessing, data: str, split: str = "train", count: int = 1024, seed: int = 0
) -> np.ndarray:
    """A seeded random sample of ``count`` images of a dataset's training split, prepared as ``pre`` says."""
    if split not in ("train", "Training") and not split.startswith("train"):
        raise ValueError(f"calibration uses training images only, not split {split!r}")
    source = load_dataset(data).split(split)
    picked = calibration_indices(len(source), count, seed)
    return prepare_split(source.subset(picked), pre, progress=False).images.numpy()


def calibration_indices(size: int, count: int = 1024, seed: int = 0) -> np.ndarray:
    """Which of a training split's ``size`` images :func:`calibration_images` uses (sorted)."""
    return np.sort(np.random.default_rng(seed).choice(size, size=min(count, size), replace=False))


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    onnx, _ = _require_onnx()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX file not found")
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for non-ONNX files
        raise CheckpointError(f"{path}: not an ONNX file ({type(exc).__name__}: {exc})") from exc
    props = {p.key: p.value for p in graph.metadata_props}
    if META_KEY not in props:
        raise CheckpointError(f"{path}: no ExpressNet metadata (export it with `expressnet export`)")
    meta = json.loads(props[META_KEY])
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported ONNX metadata format {meta.get('format')!r} (expected {FORMAT})")
    return meta


# ONNX Runtime's QDQ propagation moves each QuantizeLinear up through the MaxPool before it, so the pool runs on
# uint8 in NCHW with the scalar kernel instead of on float in the vectorised NCHWc layout. Measured in one run on
# the 2-core CPU at batch 64, the first shipped fer2013-fast.int8.onnx: 2,066 faces/s with it, 4,221 without.
DISABLED_OPTIMIZERS = ["QDQPropagationTransformer"]


def cpu_session(path: str | Path, threads: int | None = None, parallel: int = 0):
    """An ONNX Runtime CPU session for ``path`` with every graph optimisation but :data:`DISABLED_OPTIMIZERS`, on
    ``threads`` intra-op threads (None: ONNX Runtime's choice); ``parallel`` > 0 runs independent nodes on that
    many threads of the parallel executor instead, one intra-op thread each (benchmarks/fast_variants.py
    measures it). ``CheckpointError`` naming the file when ONNX Runtime cannot load it."""
    _, ort = _require_onnx()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
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
        raise CheckpointError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc


class OnnxClassifier(Classifier):
    """An ``.onnx`` file from ``expressnet export`` run by ONNX Runtime (CPU). Safe to call from several threads."""

    backend = "onnx"

    def __init__(
        self, path: str | Path, *, tta_flip: bool | None = None, batch_size: int = 64, threads: int | None = None
    ) -> None:
        meta = read_onnx_metadata(path)
        self.session = cpu_session(path, threads)
        super().__init__(
            tuple(meta["class_names"]),
            Preprocessing.from_dict(meta["preprocessing"]),
            meta,
            str(path),
            tta_flip,
            batch_size,
        )

    def _batch_logits(self, images: np.ndarray, tta_flip: bool) -> np.ndarray:
        x = images.astype(np.float32) / np.float32(255.0)
        if tta_flip:
            both = self.session.run([OUTPUT], {INPUT: np.concatenate([x, x[..., ::-1]])})[0]
            return (both[: len(x)] + both[len(x) :]) / 2
        return self.session.run([OUTPUT], {INPUT: x})[0]


def cached_export(model: ModelSpec) -> Path:
    """A float32 ONNX export of a checkpoint, built once into the user cache (keyed by the weights' sha256)."""
    source = resolve_model(model)
    target = cache_root() / "onnx" / f"{file_sha256(source)[:20]}.onnx"
    if not target.is_file():
        export_onnx(load_model(source), target)
    return target


def onnx_classifier(
    model: ModelSpec,
    *,
    tta_flip: bool | None = None,
    precision: str = "fp32",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    threads: int | None = None,
) -> OnnxClassifier:
    """The ``onnx`` backend: an ``.onnx`` file, a shipped model's ONNX file (``hub.SHIPPED_ONNX``), or a
    checkpoint exported to float32 ONNX on first use."""
    if isinstance(model, nn.Module):
        raise ValueError("the onnx backend runs files; export the module with expressnet.runtime.export_onnx")
    if torch.device(device).type != "cpu":
        raise ValueError(f"the onnx backend runs on the CPU, not {device}")
    path = Path(str(model)) if str(model).endswith(".onnx") else shipped_onnx(model) or cached_export(model)
    return OnnxClassifier(path, tta_flip=tta_flip, batch_size=batch_size, threads=threads)
