"""Batched logits of prepared face crops (uint8 (N, C, S, S)) through a torch module: uint8 -> [0, 1] floats,
autocast and flip averaging (the mean of the logits of the image and its mirror). The one softmax is
:func:`expressnet.runtime.classifier.softmax` (numpy; re-exported here)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from ..nn.modes import eval_mode
from .classifier import softmax

__all__ = ["autocast", "predict_logits", "softmax", "to_float"]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (the only normalisation every preset uses)."""
    return images.float().div_(255.0)


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` in {"fp32", "bf16", "fp16"} on ``device``."""
    device_type = torch.device(device).type
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type, dtype=dtype)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int = 256,
    tta_flip: bool = False,
    precision: str = "fp32",
    device: torch.device | str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Logits (N, K) in float32; with ``tta_flip`` the mean of the logits of the image and its mirror.

    ``on_batch(start, stop)`` is called after each batch, e.g. to collect ``model.routing``.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    out = []
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            x = to_float(images[start : start + batch_size].to(device))
            with autocast(device, precision):
                if tta_flip and on_batch is None:  # one pass over image + mirror: ~half the time on small batches
                    both = model(torch.cat([x, x.flip(-1)])).float()
                    logits = (both[: len(x)] + both[len(x) :]) / 2
                else:
                    logits = model(x).float()
                    if on_batch is not None:
                        on_batch(start, start + len(x))
                    if tta_flip:
                        logits = (logits + model(x.flip(-1)).float()) / 2
            out.append(logits.cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)
