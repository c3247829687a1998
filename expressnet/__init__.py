"""ExpressNet: facial expression recognition with ExpressNet-MoE (arXiv 2510.13493)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .nn import ExpressNetConfig, ExpressNetMoE, create_model, list_presets

if TYPE_CHECKING:
    from .hub import load_model
    from .infer.recognizer import Face, Recognizer

__version__ = "0.1.0"

__all__ = [
    "ExpressNetConfig",
    "ExpressNetMoE",
    "Face",
    "Recognizer",
    "__version__",
    "create_model",
    "list_presets",
    "load_model",
]

_LAZY = {
    "Recognizer": "expressnet.infer.recognizer",
    "Face": "expressnet.infer.recognizer",
    "load_model": "expressnet.hub",
}


def __getattr__(name: str) -> Any:
    """``Recognizer``, ``Face`` and ``load_model`` are imported on first use, keeping ``import expressnet`` light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'expressnet' has no attribute {name!r}")
