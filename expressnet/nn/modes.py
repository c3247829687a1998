"""Switching a module to eval mode for a while and giving every submodule its own mode back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; afterwards each submodule has the mode it had before, so a mix
    (a training model with frozen, eval-mode BatchNorm layers) survives, which ``model.train(was_training)``
    would flatten. The modes come back when the block raises, too, set on ``training`` directly (a module's own
    ``train()`` override is not called on the way back)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
