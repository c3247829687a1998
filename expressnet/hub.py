"""Shipped models and checkpoint loading by name or path, offline.

``load_model()`` returns the default model (see ``DEFAULT``), ``load_model("fer2013")`` /
``load_model("ferplus")`` / ``load_model("rafdb")`` / ``load_model("fer2013-rafdb")`` /
``load_model("fer2013-fast")`` the shipped ones, and
``load_model(path)`` any ExpressNet checkpoint. A shipped model may also ship as an ONNX file
(``expressnet export``, see ``SHIPPED_ONNX``), which :func:`expressnet.runtime.load_classifier` runs with ONNX
Runtime.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError, build_model

WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED = {
    "fer2013": "fer2013.safetensors",
    "ferplus": "ferplus.safetensors",
    "rafdb": "rafdb.safetensors",
    "fer2013-rafdb": "fer2013-rafdb.safetensors",
    "fer2013-fast": "fer2013-fast.safetensors",
}
# The ONNX files that ship (expressnet export NAME [--int8] -o expressnet/weights/FILE --overwrite). fer2013-fast
# ships float32: its int8 export ran no faster (6,936 against 7,008 faces/s at batch 64, one run, 2 threads; its first
# convolutions stay float either way) and agreed less with torch (98.22 % of PublicTest with every layer quantised).
SHIPPED_ONNX = {"fer2013": "fer2013.int8.onnx", "fer2013-fast": "fer2013-fast.onnx"}
# The layers an int8 export of a shipped model keeps float when none are named (the others:
# runtime.onnx.KEEP_FLOAT), chosen on PublicTest with scripts/int8_exclusions.py --model NAME --split PublicTest.
# fer2013-fast: top-1 agreement with torch 99.25 % of PublicTest (98.89 % with KEEP_FLOAT), 98.97 % of PrivateTest
# (98.63 %), python benchmarks/onnx_parity.py --models fer2013-fast (reports/onnx_parity.txt); 99.05 % of both
# after its class-bias repack.
INT8_KEEP_FLOAT = {
    "fer2013-fast": (
        "/model/global_branch/convs",
        "/model/fusion/fc",
        "/model/backbone/layer1",
        "/model/local_branch/convs",
        "/model/head",
        "/model/backbone/layer4",
    )
}
# fer2013-rafdb met its validation rule (configs/fer2013-rafdb.yaml) but turns 3 of the 7 labelled photos to
# another emotion when they are rotated by 90 degrees (tests/test_faces.py), so fer2013 stays the default
DEFAULT = "fer2013"


def shipped_models() -> dict[str, Path]:
    return {name: WEIGHTS_DIR / file for name, file in SHIPPED.items() if (WEIGHTS_DIR / file).is_file()}


def shipped_name(name_or_path: str | Path | nn.Module | None) -> str | None:
    """The shipped model's name for None/"default"/a shipped name, else None."""
    if name_or_path is None or str(name_or_path) == "default":
        return DEFAULT
    return str(name_or_path) if isinstance(name_or_path, str) and name_or_path in SHIPPED else None


def shipped_onnx(name_or_path: str | Path | nn.Module | None, weights: str | None = None) -> Path | None:
    """The ONNX file that ships for a shipped model (``SHIPPED_ONNX``), if any; with ``weights`` ("float32" or
    "int8") only a file of that precision (``NAME.int8.onnx`` holds int8 weights, ``NAME.onnx`` float32)."""
    name = shipped_name(name_or_path)  # None for a module or a path
    if name not in SHIPPED_ONNX:
        return None
    path = WEIGHTS_DIR / SHIPPED_ONNX[name]
    precision = "int8" if path.name.endswith(".int8.onnx") else "float32"
    if weights is not None and weights != precision:
        return None
    return path if path.is_file() else None


def int8_keep_float(name_or_path: str | Path | nn.Module | None) -> tuple[str, ...] | None:
    """The float layers of a shipped model's int8 export (``INT8_KEEP_FLOAT``), None for the default ones."""
    return INT8_KEEP_FLOAT.get(shipped_name(name_or_path))


def resolve_model(name_or_path: str | Path | None = None) -> Path:
    """The checkpoint file of a shipped name, a file, or a training run folder (its best.safetensors)."""
    key = shipped_name(name_or_path)
    if key is not None:
        path = WEIGHTS_DIR / SHIPPED[key]
        if not path.is_file():
            raise CheckpointError(f"{path}: shipped model {key!r} is missing from this installation")
        return path
    path = Path(str(name_or_path))
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint (shipped models: {', '.join(SHIPPED)})")
    if path.is_dir():
        path = path / "best.safetensors"  # a training run directory
    return path


def load_model(name_or_path: str | Path | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """A torch model in eval mode with ``.class_names``, ``.preprocessing``, ``.metadata`` and ``.source``."""
    return build_model(resolve_model(name_or_path), device)
