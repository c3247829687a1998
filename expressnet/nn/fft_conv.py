"""'Same'-padded 2-D convolution that switches to FFT for large kernels.

A 75x75 kernel costs ~14 s per 224x224 image as a direct convolution on two CPU cores; through the
FFT it costs milliseconds. :class:`SameConv2d` is a drop-in :class:`torch.nn.Conv2d` (same parameter
names and shapes, stride 1, ``padding="same"``) that uses :func:`fft_conv2d_same` when its kernel is at
least ``fft_min_kernel`` pixels, and ``torch.nn.functional.conv2d`` otherwise. Padding follows PyTorch
(and TensorFlow) 'same': for even kernels the extra row/column of padding goes to the bottom/right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Chosen by benchmarks/fft_threshold.py on 2 Zen 4 cores over the paper preset's layers: the FFT path wins
# clearly from 25x25 kernels on, is even at 15x15 (it depends on channels and map size) and loses below.
DEFAULT_FFT_MIN_KERNEL = 16


def _fast_size(n: int) -> int:
    """Smallest integer >= n whose prime factors are 2, 3 and 5 (fast for pocketfft/MKL)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def same_padding(kernel: tuple[int, int]) -> tuple[int, int, int, int]:
    """``F.pad`` amounts (left, right, top, bottom) of 'same' padding; extra goes right/bottom."""
    kh, kw = kernel
    top, left = (kh - 1) // 2, (kw - 1) // 2
    return left, kw - 1 - left, top, kh - 1 - top


def fft_conv2d_same(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-correlation of ``x`` (N,C,H,W) with ``weight`` (O,C,kh,kw), 'same' padding, via rfft2.

    Equal to ``F.conv2d(x, weight, bias, padding="same")`` up to float rounding, differentiable in all
    three arguments. Computed in float32 (or float64 if given), whatever autocast is active.
    """
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, weight = x.to(dtype), weight.to(dtype)
    n, c, h, w = x.shape
    o, c_w, kh, kw = weight.shape
    if c != c_w:
        raise ValueError(f"input has {c} channels but the kernel expects {c_w}")
    x = F.pad(x, same_padding((kh, kw)))
    fh, fw = _fast_size(h + kh - 1), _fast_size(w + kw - 1)
    xf = torch.fft.rfft2(x, s=(fh, fw))  # N,C,fh,fw'
    wf = torch.fft.rfft2(weight, s=(fh, fw))  # O,C,fh,fw'
    # Correlation is multiplication by the conjugate spectrum; contract channels per frequency (a batched
    freq = fh * (fw // 2 + 1)
    # complex matmul over frequencies is far faster than einsum's broadcasting on CPU, but only on
    # contiguous operands).
    xf = xf.reshape(n, c, freq).permute(2, 0, 1).contiguous()
    wf = wf.conj().reshape(o, c, freq).permute(2, 1, 0).contiguous()
    yf = torch.bmm(xf, wf).permute(1, 2, 0).reshape(n, o, fh, fw // 2 + 1)
    y = torch.fft.irfft2(yf, s=(fh, fw))[..., :h, :w]
    if bias is not None:
        y = y + bias.to(dtype).view(1, -1, 1, 1)
    return y.contiguous()


class SameConv2d(nn.Conv2d):
    """Stride-1 'same' convolution; FFT for kernels of at least ``fft_min_kernel`` (``None``: never)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        bias: bool = True,
        fft_min_kernel: int | None = DEFAULT_FFT_MIN_KERNEL,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding="same", bias=bias)
        self.fft_min_kernel = fft_min_kernel

    @property
    def uses_fft(self) -> bool:
        return self.fft_min_kernel is not None and min(self.kernel_size) >= self.fft_min_kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_fft:
            return fft_conv2d_same(x, self.weight, self.bias).to(x.dtype)
        return super().forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", fft=True" if self.uses_fft else "")
