"""Model checkpoints: safetensors weights with the JSON metadata embedded (and written beside them).

Metadata holds everything needed to rebuild and use the model: preset and model config, class names,
preprocessing, training config, data fingerprints, metrics and the package version. Loading never
unpickles anything.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .data.prepare import Preprocessing
from .hub import CheckpointError
from .io import atomic_write, atomic_write_text, refuse_existing
from .nn import ExpressNetConfig, ExpressNetMoE

FORMAT = "expressnet-checkpoint/1"
META_KEY = "expressnet"
SCALE_SUFFIX = "::scale"
INT8 = "int8-per-channel"


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Write ``path`` (.safetensors) and ``path`` with .json atomically; ``metadata["weights"] == "int8-per-channel"``
    stores the weights quantised (see :func:`quantize_int8`)."""
    path = Path(path)
    meta = {"format": FORMAT, **metadata}
    text = json.dumps(meta, indent=1, default=str)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    if meta.get("weights") == INT8:
        tensors = quantize_int8(tensors)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={META_KEY: text}))
    atomic_write_text(path.with_suffix(".json"), text + "\n")
    return path


def quantize_int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Compact storage for shipping: conv/linear weights as int8 with one float32 scale per output channel
    (symmetric, round to nearest), other parameters as float16, BatchNorm statistics and integers unchanged."""
    out = {}
    for key, value in state.items():
        if value.is_floating_point() and value.ndim >= 2:
            w = value.detach().float().reshape(value.shape[0], -1)
            scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
            out[key] = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(value.shape)
            out[key + SCALE_SUFFIX] = scale
        elif value.is_floating_point() and not key.endswith(("running_mean", "running_var")):
            out[key] = value.detach().half()
        else:
            out[key] = value
    return out


def dequantize(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`quantize_int8` (float32 tensors)."""
    out = {}
    for key, value in state.items():
        if key.endswith(SCALE_SUFFIX):
            continue
        scale = state.get(key + SCALE_SUFFIX)
        if scale is not None:
            out[key] = value.float() * scale.view(-1, *([1] * (value.ndim - 1)))
        else:
            out[key] = value.float() if value.is_floating_point() else value
    return out


def read_metadata(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a safetensors file ({exc})") from exc
    if raw is None:
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            raise CheckpointError(f"{path}: no ExpressNet metadata inside and no {sidecar.name} beside it")
        raw = sidecar.read_text()
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format')!r} (expected {FORMAT})")
    return meta


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights (float32, dequantised if stored as int8) and metadata."""
    meta = read_metadata(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read weights ({exc})") from exc
    return (dequantize(state) if meta.get("weights") == INT8 else state), meta


def average_checkpoints(paths: list[str | Path]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The uniform weight average of checkpoints of one architecture (a model soup: Wortsman et al. 2022) and
    the last one's metadata, without the fields that described its own weights (metrics, temperature,
    calibration) and with the members recorded. Each file's own temperature is not applied: the soup averages the
    trained weights, to be calibrated again (``expressnet pack``). BatchNorm statistics are averaged too; re-
    estimate them on training images for a soup of models that drifted apart."""
    if len(paths) < 2:
        raise ValueError(f"a weight average needs two checkpoints or more, got {len(paths)}")
    first, first_meta = load_checkpoint(paths[0])
    total = {k: v.double() if v.is_floating_point() else v.clone() for k, v in first.items()}
    meta = first_meta
    for path in paths[1:]:
        state, meta = load_checkpoint(path)
        for field in ("model_config", "class_names", "preprocessing"):
            if meta.get(field) != first_meta.get(field):
                raise CheckpointError(f"{path}: its {field} differs from {paths[0]}'s; only one architecture averages")
        if state.keys() != total.keys():
            raise CheckpointError(f"{path}: its tensors are not those of {paths[0]}")
        for key, value in state.items():
            if value.is_floating_point():
                total[key] += value.double()
    average = {k: (v / len(paths)).float() if v.is_floating_point() else v for k, v in total.items()}
    dropped = ("metrics", "temperature", "logit_bias", "calibration", "packed_from", "weights")
    meta = {k: v for k, v in meta.items() if k not in dropped}
    meta["soup"] = {"members": [str(p) for p in paths]}
    return average, meta


def fold_temperature(head: torch.nn.Linear, temperature: float) -> None:
    """Divide the logits of the final layer ``head`` by ``temperature`` by scaling its weight and bias in place."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, not {temperature!r}")
    if temperature == 1:
        return
    with torch.no_grad():
        head.weight.div_(temperature)
        if head.bias is not None:
            head.bias.div_(temperature)


def add_logit_bias(head: torch.nn.Linear, bias: list[float]) -> None:
    """Add one bias per class to the logits of the final layer ``head`` (in place; see BCTS in
    :mod:`expressnet.evaluate.calibration`)."""
    values = torch.as_tensor(bias, dtype=head.weight.dtype)
    if values.shape != (head.out_features,) or not torch.isfinite(values).all():
        raise ValueError(f"logit_bias must be {head.out_features} finite numbers, not {bias!r}")
    with torch.no_grad():
        if head.bias is None:
            head.bias = torch.nn.Parameter(torch.zeros_like(values))
        head.bias.add_(values)


def build_model(path: str | Path, device: str | torch.device = "cpu") -> ExpressNetMoE:
    """Rebuild an ExpressNet-MoE from a checkpoint: returns the model in eval mode with ``.metadata``,
    ``.class_names`` and ``.preprocessing`` attached. A ``temperature`` and a ``logit_bias`` in the metadata (see
    ``expressnet pack``) are folded into the classifier (``logits / temperature + logit_bias``), so every consumer
    of the logits gets calibrated probabilities."""
    state, meta = load_checkpoint(path)
    try:
        cfg = ExpressNetConfig.from_dict(meta["model_config"])
        model = ExpressNetMoE(cfg)
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not match the model described in its metadata ({exc})") from exc
    try:
        fold_temperature(model.head, meta.get("temperature", 1.0))
        if meta.get("logit_bias") is not None:
            add_logit_bias(model.head, meta["logit_bias"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    model.metadata = meta
    model.class_names = tuple(meta["class_names"])
    model.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
    model.source = str(path)
    return model.to(device).eval()


def pack_checkpoint(
    source: str | Path, target: str | Path, weights: str = INT8, overwrite: bool = False, **extra: Any
) -> Path:
    """Write a copy of a checkpoint for shipping (``weights``: "int8-per-channel" or "float32") with
    ``extra`` metadata merged in. The source is never modified; a ``target`` (or its .json sidecar) that exists
    is :class:`~expressnet.io.OutputExists` unless ``overwrite``."""
    if weights not in (INT8, "float32"):
        raise ValueError(f"weights must be {INT8!r} or 'float32', not {weights!r}")
    source, target = Path(source), Path(target)
    if source.resolve() == target.resolve():
        raise ValueError(f"{target}: would overwrite its source checkpoint")
    refuse_existing(target, target.with_suffix(".json"), overwrite=overwrite)
    state, meta = load_checkpoint(source)
    meta = {**meta, **extra, "weights": weights, "packed_from": str(source)}
    return save_checkpoint(target, state, meta)
