"""The ``torch`` classifier backend: a torch module (from :func:`expressnet.hub.load_model`) behind a lock, in
fp32, bf16 or fp16. Imported when torch is chosen (``backend="torch"``, a GPU, a checkpoint or a module)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch
from torch import nn

from ..hub import load_model
from .batched import predict_logits
from .classifier import TORCH_PRECISIONS, Classifier, ModelSpec


class TorchClassifier(Classifier):
    """A torch module behind a lock; ``precision``: fp32, bf16, fp16 (autocast)."""

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
        if precision not in TORCH_PRECISIONS:
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
        self.torch_precision = precision
        self.device = next(module.parameters()).device
        self._lock = threading.Lock()

    @property
    def precision(self) -> str:
        return TORCH_PRECISIONS[self.torch_precision]

    def _batch_logits(self, images: np.ndarray, tta_flip: bool) -> np.ndarray:
        with self._lock:
            logits = predict_logits(
                self.module,
                torch.from_numpy(np.ascontiguousarray(images)),
                len(images),
                tta_flip,
                self.torch_precision,
            )
        return logits.numpy()


def torch_classifier(
    model: ModelSpec,
    *,
    tta_flip: bool | None = None,
    precision: str = "fp32",
    batch_size: int = 64,
    device: Any = "cpu",
    threads: int | None = None,
) -> TorchClassifier:
    module = model if isinstance(model, nn.Module) else load_model(model, device)
    if threads:
        torch.set_num_threads(threads)
    return TorchClassifier(module, tta_flip=tta_flip, precision=precision, batch_size=batch_size, device=device)
