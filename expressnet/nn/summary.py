"""Parameter and multiply-accumulate counts per part of an ExpressNet-MoE model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .expressnet import ExpressNetMoE
from .fft_conv import SameConv2d, use_fft
from .modes import eval_mode

PARTS = {
    "global": ("global_branch",),
    "local": ("local_branch",),
    "backbone": ("backbone",),
    "fusion": ("fusion",),
    "moe": ("moe_global", "moe_expression"),
    "head": ("head",),
}


@dataclass
class PartCost:
    params: int
    macs: int


def _layer_macs(module: nn.Module, out: torch.Tensor) -> int:
    """MACs per sample of a conv/linear layer: output elements x inputs feeding each output."""
    per_sample = out[0].numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return per_sample * (module.in_channels // module.groups) * kh * kw
    return per_sample * module.in_features


def model_costs(model: ExpressNetMoE) -> dict[str, PartCost]:
    """Trainable parameters and per-image MACs (convolution and dense layers, as direct convolution) per part.

    MoE MACs count every expert, as the model computes all of them densely.
    """
    macs: dict[str, int] = dict.fromkeys(PARTS, 0)
    owners = {prefix: part for part, prefixes in PARTS.items() for prefix in prefixes}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            part = owners.get(name.split(".")[0])
            if part is None:
                continue

            def hook(mod, _inp, out, part=part):
                macs[part] += _layer_macs(mod, out)

            hooks.append(module.register_forward_hook(hook))
    _probe(model, hooks)
    costs = {}
    for part, prefixes in PARTS.items():
        params = sum(p.numel() for prefix in prefixes for p in getattr(model, prefix).parameters() if p.requires_grad)
        costs[part] = PartCost(params, macs[part])
    costs["total"] = PartCost(sum(c.params for c in costs.values()), sum(c.macs for c in costs.values()))
    return costs


def batchnorm_statistics(model: nn.Module) -> int:
    """Entries of BatchNorm running mean/variance (Keras counts these as non-trainable parameters)."""
    return sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))


def fft_layers(model: ExpressNetMoE) -> list[tuple[int, int]]:
    """(kernel, map size) of each 'same' convolution that takes the FFT path at the model's input size."""
    found: list[tuple[int, int]] = []
    hooks = []
    for module in model.modules():
        if isinstance(module, SameConv2d):

            def hook(mod, inputs, _out):
                if mod.fft and use_fft(inputs[0], mod.weight):
                    found.append((mod.kernel_size[0], inputs[0].shape[-1]))

            hooks.append(module.register_forward_hook(hook))
    _probe(model, hooks)
    return found


def _probe(model: ExpressNetMoE, hooks: list) -> None:
    """One eval-mode forward pass of a blank image, then remove ``hooks``."""
    cfg = model.config
    try:
        with eval_mode(model), torch.inference_mode():
            model(torch.zeros(1, cfg.in_channels, cfg.input_size, cfg.input_size))
    finally:
        for h in hooks:
            h.remove()
