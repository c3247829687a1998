"""FFT convolution equals F.conv2d(padding='same') in outputs and all gradients."""

import pytest
import torch
import torch.nn.functional as F

from expressnet.nn.fft_conv import SameConv2d, _fast_size, fft_conv2d_same, use_fft


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


def test_the_fft_path_is_chosen_from_the_input_at_run_time():
    """Measured rule (fft_conv.py): 17x17 on a 48 px gray map stays direct; large kernels on large maps take the
    FFT; small kernels never; ``fft=False`` never. Nothing about it is in the state dict."""
    small = SameConv2d(3, 8, 5)
    large = SameConv2d(3, 8, 29)
    never = SameConv2d(3, 8, 29, fft=False)
    assert not small.uses_fft(96) and large.uses_fft(96) and not never.uses_fft(96)
    assert not SameConv2d(1, 8, 17).uses_fft(48)  # the compact preset's first global conv: direct wins
    assert not large.uses_fft(16)  # the same layer on a small map: direct
    never.load_state_dict(large.state_dict())
    x = torch.randn(2, 3, 96, 96)
    assert use_fft(x, large.weight)
    assert rel(large(x), never(x)) <= 1e-4
    assert set(large.state_dict()) == {"weight", "bias"}  # drop-in for nn.Conv2d


def test_tracing_takes_the_direct_path_and_keeps_the_shape():
    """A traced FFT-sized layer once returned a 1x1 map (``_fast_size`` traced into tensor ops)."""
    conv = SameConv2d(3, 4, 29).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        traced = torch.jit.trace(conv, x)
        y = torch.randn(2, 3, 96, 96)
        assert traced(y).shape == (2, 4, 96, 96)
        assert rel(traced(y), F.conv2d(y, conv.weight, conv.bias, padding="same")) <= 1e-5
    assert _fast_size(torch.tensor(97).item()) == 100 and _fast_size(49) == 50


def test_fft_conv_under_bf16_autocast_and_channel_mismatch():
    conv = SameConv2d(2, 3, 21)
    x = torch.randn(1, 2, 96, 96)
    assert use_fft(x, conv.weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert rel(y.float(), F.conv2d(x, conv.weight, conv.bias, padding="same")) <= 1e-4
    with pytest.raises(ValueError, match="channels"):
        fft_conv2d_same(torch.randn(1, 3, 8, 8), torch.randn(1, 2, 3, 3))
