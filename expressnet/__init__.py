"""ExpressNet: facial expression recognition with ExpressNet-MoE (arXiv 2510.13493).

    from expressnet import Recognizer
    faces = Recognizer().predict("photo.jpg")     # the default model on ONNX Runtime; no torch needed
    list_models()                                 # the shipped models (expressnet models shows their records)
    read_results("rows.jsonl")                    # predict's results as a pandas DataFrame

``import expressnet`` imports nothing heavy: every name below is imported on first use. The torch parts
(``create_model``, ``load_model``, ``ExpressNetMoE``, ...) need the torch extra: ``pip install 'expressnet[torch]'``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hub import get_record, list_models, load_model
    from .infer.outputs import read_results
    from .infer.recognizer import Face, FrameResult, Recognizer
    from .nn import ExpressNetConfig, ExpressNetMoE, create_model, list_presets
    from .version import __version__

_LAZY = {
    "__version__": "expressnet.version",  # read from the installed metadata (pyproject.toml's version)
    "Recognizer": "expressnet.infer.recognizer",
    "Face": "expressnet.infer.recognizer",
    "FrameResult": "expressnet.infer.recognizer",
    "list_models": "expressnet.hub",
    "get_record": "expressnet.hub",
    "load_model": "expressnet.hub",
    "read_results": "expressnet.infer.outputs",
    "create_model": "expressnet.nn",
    "list_presets": "expressnet.nn",
    "ExpressNetConfig": "expressnet.nn",
    "ExpressNetMoE": "expressnet.nn",
}

__all__ = [
    "ExpressNetConfig",
    "ExpressNetMoE",
    "Face",
    "FrameResult",
    "Recognizer",
    "__version__",
    "create_model",
    "get_record",
    "list_models",
    "list_presets",
    "load_model",
    "read_results",
]


def __getattr__(name: str) -> Any:
    """The public names, imported on first use (``import expressnet`` stays light and torch-free)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'expressnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
