"""'Same'-padded 2-D convolution that switches to FFT for large kernels.

A 75x75 kernel costs ~14 s per 224x224 image as a direct convolution on two CPU cores; through the
FFT it costs milliseconds, while at 48 px a 17x17 kernel is faster direct. :class:`SameConv2d` is a drop-in
:class:`torch.nn.Conv2d` (same parameter names and shapes, stride 1, ``padding="same"``) that decides at run
time, from the actual input, whether :func:`fft_conv2d_same` pays (:func:`use_fft`); nothing about it is stored
in checkpoints. Tracing and ONNX export always take the direct path (ONNX has no complex FFT). Padding follows
PyTorch (and TensorFlow) 'same': for even kernels the extra row/column of padding goes to the bottom/right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The run-time rule, measured by benchmarks/fft_threshold.py on 2 Zen 4 cores (ms per image, direct / FFT):
# 1->8 ch 48 px 17x17: 0.20 / 0.38 (direct wins); 8->16 24 px 11x11: 0.19 / 0.27; 3->8 64 px 21x21: 0.77 / 0.40;
# 32->64 28 px 15x15: 6.9 / 4.0; 16->32 56 px 25x25: 28.6 / 2.5; 3->8 224 px 75x75: 32,700 / 15. FFT wins once a
# layer's direct multiply-accumulates per image pass ~2e7 (with kernels of 15 and more); batch size barely matters.
FFT_MIN_KERNEL = 15
FFT_MIN_MACS = 2e7


def use_fft(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the FFT path is faster for input ``x`` (N, C, H, W) and ``weight`` (O, C, kh, kw) on this call."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return False
    o, c, kh, kw = weight.shape
    h, w = x.shape[-2:]
    return min(kh, kw) >= FFT_MIN_KERNEL and kh * kw * c * o * h * w >= FFT_MIN_MACS


def _fast_size(n: int) -> int:
    """Smallest integer >= n whose prime factors are 2, 3 and 5 (fast for pocketfft/MKL). Plain integer
    arithmetic on a Python int, so tracing records a constant."""
    n = int(n)
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
    """Stride-1 'same' convolution; takes the FFT path when :func:`use_fft` says it is faster for the input
    (``fft=False``: never, e.g. to compare)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        bias: bool = True,
        fft: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding="same", bias=bias)
        self.fft = fft

    def uses_fft(self, input_size: int) -> bool:
        """Whether a square ``input_size`` map takes the FFT path."""
        return self.fft and use_fft(torch.empty(0, 0, input_size, input_size), self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fft and use_fft(x, self.weight):
            return fft_conv2d_same(x, self.weight, self.bias).to(x.dtype)
        return super().forward(x)
