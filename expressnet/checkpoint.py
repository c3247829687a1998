"""Model checkpoints: safetensors weights with the JSON metadata embedded (and written beside them).

Metadata holds everything needed to rebuild and use the model: preset and model config, class names,
preprocessing, training config, data fingerprints, metrics and the package version. Loading never
unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .io import atomic_write, atomic_write_text

FORMAT = "expressnet-checkpoint/1"
META_KEY = "expressnet"


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Write ``path`` (.safetensors) and ``path`` with .json atomically."""
    path = Path(path)
    meta = {"format": FORMAT, **metadata}
    text = json.dumps(meta, indent=1, default=str)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={META_KEY: text}))
    atomic_write_text(path.with_suffix(".json"), text + "\n")
    return path


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
    meta = read_metadata(path)
    try:
        return load_file(str(path)), meta
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read weights ({exc})") from exc


def build_model(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild an ExpressNet-MoE from a checkpoint: returns the model in eval mode with ``.metadata``,
    ``.class_names`` and ``.preprocessing`` attached."""
    from .data.prepare import Preprocessing
    from .nn import ExpressNetConfig, ExpressNetMoE

    state, meta = load_checkpoint(path)
    try:
        cfg = ExpressNetConfig.from_dict(meta["model_config"])
        model = ExpressNetMoE(cfg)
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not match the model described in its metadata ({exc})") from exc
    model.metadata = meta
    model.class_names = tuple(meta["class_names"])
    model.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
    model.source = str(path)
    return model.to(device).eval()
