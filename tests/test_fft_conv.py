"""FFT convolution equals F.conv2d(padding='same') in outputs and all gradients."""

import pytest
import torch
import torch.nn.functional as F

from expressnet.nn.fft_conv import SameConv2d, fft_conv2d_same


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm() / b.norm()).detach())


@pytest.mark.parametrize(
    ("n", "cin", "cout", "h", "w", "kh", "kw"),
    [
        (2, 3, 4, 20, 20, 7, 7),  # odd
        (2, 3, 5, 21, 17, 8, 8),  # even, non-square input
        (1, 2, 3, 16, 16, 16, 16),  # kernel as large as the input
        (3, 4, 2, 33, 40, 25, 25),
        (1, 3, 2, 30, 30, 6, 9),  # rectangular kernel, mixed parity
        (2, 1, 8, 48, 48, 17, 17),  # the compact preset's first global conv
    ],
)
@pytest.mark.parametrize("bias", [True, False])
def test_fft_matches_direct_with_gradients(n, cin, cout, h, w, kh, kw, bias):
    g = torch.Generator().manual_seed(n * 1000 + h + kh)
    x = torch.randn(n, cin, h, w, generator=g, requires_grad=True)
    wt = torch.randn(cout, cin, kh, kw, generator=g, requires_grad=True)
    b = torch.randn(cout, generator=g, requires_grad=True) if bias else None
    ref = F.conv2d(x, wt, b, padding="same")
    out = fft_conv2d_same(x, wt, b)
    assert out.shape == ref.shape
    assert rel(out, ref) <= 1e-4
    grad_out = torch.randn(ref.shape, generator=g)
    inputs = (x, wt, b) if bias else (x, wt)
    ref_grads = torch.autograd.grad(ref, inputs, grad_out)
    fft_grads = torch.autograd.grad(out, inputs, grad_out)
    for name, a, r in zip(("input", "weight", "bias"), fft_grads, ref_grads):
        assert rel(a, r) <= 1e-4, name


def test_same_conv_switches_on_threshold_and_matches():
    small = SameConv2d(3, 4, 5, fft_min_kernel=16)
    large = SameConv2d(3, 4, 17, fft_min_kernel=16)
    never = SameConv2d(3, 4, 17, fft_min_kernel=None)
    assert not small.uses_fft and large.uses_fft and not never.uses_fft
    never.load_state_dict(large.state_dict())
    x = torch.randn(2, 3, 40, 40)
    assert rel(large(x), never(x)) <= 1e-4
    assert set(large.state_dict()) == {"weight", "bias"}  # drop-in for nn.Conv2d


def test_fft_conv_under_bf16_autocast_and_channel_mismatch():
    conv = SameConv2d(2, 3, 21, fft_min_kernel=16)
    x = torch.randn(1, 2, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert rel(y.float(), F.conv2d(x, conv.weight, conv.bias, padding="same")) <= 1e-4
    with pytest.raises(ValueError, match="channels"):
        fft_conv2d_same(torch.randn(1, 3, 8, 8), torch.randn(1, 2, 3, 3))
