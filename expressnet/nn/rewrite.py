"""Exact rewrites of a trained model for inference runtimes: the same function, a shape they run faster.

:func:`space_to_depth_first_unit` recomputes the global branch's first unit (stride-1 'same' k x k conv over
the image -> ReLU -> Dropout -> BatchNorm -> 2x2 max-pool) on the 2x2 space-to-depth image: one convolution over
4x the channels at half the resolution, producing the four output phases of each filter, then BatchNorm per
phase and a max over the phases (the pool). In eval mode it equals the unit to float rounding. The folded
kernel is 2 * ((k // 2 + 1) // 2) + 1 square: 9x9 over 4 channels for a 17x17 one. ONNX Runtime on a CPU runs
the shipped models' first unit faster that way (benchmarks/rewrites.py);
:func:`expressnet.runtime.export_onnx` applies it where it pays (:func:`space_to_depth_pays`).

:func:`norm_after_pool` moves each pooled unit's BatchNorm after its 2x2 max-pool, where no BatchNorm scale is
negative: a per-channel non-decreasing map commutes with a max, and to the bit, since float rounding is
monotone too. The BatchNorm then runs on a quarter of the values; ONNX Runtime cannot fuse a BatchNorm that
follows a ReLU into the convolution, so it was a pass of its own over the full-resolution map
(benchmarks/rewrites.py measures both rewrites). Every shipped model's units qualify.
"""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn.functional as F
from torch import nn

from .expressnet import ConvUnit, ExpressNetMoE

# First global kernels from which the rewrite is applied by default. python benchmarks/rewrites.py (batch 128,
# 2 threads, ONNX Runtime, alternating rounds), three runs (reports/rewrites.txt), and two runs of the same
# comparison before it was a script: kernel 17 (fer2013 int8) 1.04x, 1.05x, 1.08x, 1.10x, 1.10x; kernel 9
# (compact-xs fp32) 1.13x, 1.11x, 1.15x, 1.08x, 1.11x; kernel 5 (fer2013-fast fp32) 1.01x, 0.98x, 1.06x, 0.96x,
# 1.03x.
MIN_KERNEL = 9


class SpaceToDepthUnit(nn.Module):
    """A pooled :class:`ConvUnit` computed on the 2x2 space-to-depth input (even input sizes, eval mode)."""

    def __init__(self, unit: ConvUnit) -> None:
        super().__init__()
        conv, self.bn = unit[0], unit[3]
        w = conv.weight.detach()
        filters, cin, k, _ = w.shape
        pad = k // 2
        half = (pad + 1) // 2  # reach of the kernel on the half-resolution grid: |2m + p - a| <= pad
        side = 2 * half + 1
        folded = w.new_zeros(2, 2, filters, cin, 2, 2, side, side)  # out phase (a, b), f, c, in phase (p, q), m, n
        reach = range(-half, half + 1)
        for a, b, p, q, m, n in itertools.product(range(2), range(2), range(2), range(2), reach, reach):
            dy, dx = 2 * m + p + pad - a, 2 * n + q + pad - b
            if 0 <= dy < k and 0 <= dx < k:
                folded[a, b, :, :, p, q, m + half, n + half] = w[:, :, dy, dx]
        self.register_buffer("weight", folded.reshape(4 * filters, cin * 4, side, side))
        bias = conv.bias.detach() if conv.bias is not None else w.new_zeros(filters)
        self.register_buffer("bias", bias.repeat(4))
        self.half, self.filters = half, filters
        self.norm_last = False  # BatchNorm after the max over phases (norm_after_pool): exact if it keeps order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)
        y = F.relu(F.conv2d(x, self.weight, self.bias, padding=self.half))
        if self.norm_last:
            return self.bn(y.reshape(n, 4, self.filters, h // 2, w // 2).amax(1))
        y = self.bn(y.reshape(n * 4, self.filters, h // 2, w // 2))
        return y.reshape(n, 4, self.filters, h // 2, w // 2).amax(1)


class PoolThenNormUnit(nn.Sequential):
    """A pooled :class:`ConvUnit` in the order conv -> ReLU -> Dropout -> MaxPool -> BatchNorm (the same function
    in eval mode where no BatchNorm scale is negative: :func:`norm_after_pool`)."""

    def __init__(self, unit: ConvUnit) -> None:
        conv, relu, dropout, bn, pool = unit
        super().__init__(conv, relu, dropout, pool, bn)


def _first_unit(model: nn.Module) -> ConvUnit | None:
    branch = getattr(model, "global_branch", None)
    unit = branch.convs[0] if branch is not None and len(branch.convs) else None
    return unit if isinstance(unit, ConvUnit) else None


def space_to_depth_applies(model: nn.Module) -> bool:
    """Whether the rewrite is exact for ``model``: an ExpressNet-MoE whose first global unit pools, with an odd
    kernel and an even input size."""
    unit = _first_unit(model)
    if not isinstance(model, ExpressNetMoE) or unit is None or len(unit) < 5:
        return False
    k = unit[0].kernel_size
    return k[0] == k[1] and k[0] % 2 == 1 and model.config.input_size % 2 == 0


def space_to_depth_pays(model: nn.Module) -> bool:
    """Whether the export should apply it by default: it applies, the first kernel is >= ``MIN_KERNEL``, and the
    input is what it was measured on (48x48 gray; other sizes may ask for it with ``space_to_depth=True``)."""
    if not space_to_depth_applies(model):
        return False
    cfg = model.config
    return _first_unit(model)[0].kernel_size[0] >= MIN_KERNEL and (cfg.input_size, cfg.in_channels) == (48, 1)


def space_to_depth_first_unit(model: ExpressNetMoE) -> ExpressNetMoE:
    """An eval-mode copy of ``model`` with its first global unit rewritten (``model`` is left as it is)."""
    if not space_to_depth_applies(model):
        raise ValueError("the space-to-depth rewrite needs a pooled first global unit, an odd kernel, an even input")
    out = copy.deepcopy(model).eval()
    out.global_branch.convs[0] = SpaceToDepthUnit(out.global_branch.convs[0]).eval()
    return out


def keeps_order(bn: nn.BatchNorm2d) -> bool:
    """Whether eval-mode ``bn`` is non-decreasing in every channel (no negative scale), so it commutes with a max."""
    return bn.weight is None or bool((bn.weight.detach() >= 0).all())


def _norm_after_pool_units(model: nn.Module) -> list[tuple[nn.Sequential, int]]:
    """(conv stack, index) of each pooled unit of ``model``'s branches whose BatchNorm can follow its pool."""
    found = []
    for name in ("global_branch", "local_branch"):
        branch = getattr(model, name, None)
        for i, unit in enumerate(branch.convs if branch is not None else ()):
            pooled = isinstance(unit, ConvUnit) and len(unit) == 5
            if (pooled and keeps_order(unit[3])) or (
                isinstance(unit, SpaceToDepthUnit) and not unit.norm_last and keeps_order(unit.bn)
            ):
                found.append((branch.convs, i))
    return found


def norm_after_pool_applies(model: nn.Module) -> bool:
    """Whether :func:`norm_after_pool` rewrites any unit of ``model``."""
    return isinstance(model, ExpressNetMoE) and bool(_norm_after_pool_units(model))


def norm_after_pool(model: ExpressNetMoE) -> ExpressNetMoE:
    """An eval-mode copy of ``model`` with the BatchNorm of each pooled unit (the space-to-depth one too) after the
    pool, where its scales are not negative; the outputs are equal to the bit (``model`` is left as it is)."""
    if not norm_after_pool_applies(model):
        raise ValueError(
            "the norm-after-pool rewrite needs an ExpressNet-MoE with a pooled unit whose BatchNorm has no "
            "negative scale"
        )
    out = copy.deepcopy(model).eval()
    for convs, i in _norm_after_pool_units(out):
        if isinstance(convs[i], SpaceToDepthUnit):
            convs[i].norm_last = True
        else:
            convs[i] = PoolThenNormUnit(convs[i]).eval()
    return out
