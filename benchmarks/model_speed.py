"""Model speed on this CPU (2 threads by default): the issue #2 targets.

* paper preset forward, batch 8: images/s with FFT large-kernel convolution, and the direct alternative
  measured on its large convolutions alone (a full direct forward pass takes tens of seconds per image);
* compact presets: training (forward + backward + SGD step, batch 64) and inference images/s, fp32 and bf16
  autocast, channels-last.

    python benchmarks/model_speed.py [--threads 2] [--presets compact compact-s]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F
from timing import calls_per_second

from expressnet.nn import create_model


def rate(fn, images: int, seconds: float = 6.0) -> float:
    """Images per second of ``fn``, which processes ``images`` images per call."""
    return images * calls_per_second(fn, seconds)


def paper_forward(batch: int) -> None:
    model = create_model("paper").eval()
    x = torch.rand(batch, 3, 224, 224)
    with torch.inference_mode():
        fft = rate(lambda: model(x), batch, seconds=10)
    print(f"paper forward, FFT for kernels >= {model.config.fft_min_kernel}: {fft:.2f} images/s "
          f"({1000 / fft:.0f} ms per image, batch {batch})")  # fmt: skip
    # direct convolution of the FFT layers alone (batch 1; these dominate a direct forward pass)
    direct_ms = 0.0
    with torch.inference_mode():
        for m in model.modules():
            if getattr(m, "uses_fft", False):
                size = {75: 224, 50: 112, 25: 56}.get(m.kernel_size[0], 28)
                xi = torch.rand(1, m.in_channels, size, size)
                t = time.perf_counter()
                F.conv2d(xi, m.weight, m.bias, padding="same")
                direct_ms += (time.perf_counter() - t) * 1000
    rest_ms = 1000 / fft - sum_fft_layers_ms(model, batch)
    print(f"paper forward, direct convolution: the FFT layers alone take {direct_ms:,.0f} ms per image directly, "
          f"so a direct forward pass is ~{(direct_ms + rest_ms) / 1000:.1f} s per image "
          f"({1000 / (direct_ms + rest_ms):.3f} images/s)")  # fmt: skip


def sum_fft_layers_ms(model, batch: int) -> float:
    from expressnet.nn.fft_conv import fft_conv2d_same

    total = 0.0
    with torch.inference_mode():
        for m in model.modules():
            if getattr(m, "uses_fft", False):
                size = {75: 224, 50: 112, 25: 56}.get(m.kernel_size[0], 28)
                xi = torch.rand(batch, m.in_channels, size, size)
                fft_conv2d_same(xi, m.weight, m.bias)
                t = time.perf_counter()
                fft_conv2d_same(xi, m.weight, m.bias)
                total += (time.perf_counter() - t) * 1000 / batch
    return total


def compact(preset: str, batch: int) -> None:
    for precision in ("fp32", "bf16"):
        model = create_model(preset).to(memory_format=torch.channels_last)
        cfg = model.config
        x = torch.rand(batch, cfg.in_channels, cfg.input_size, cfg.input_size).contiguous(
            memory_format=torch.channels_last
        )
        y = torch.randint(0, cfg.num_classes, (batch,))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        dtype = torch.bfloat16 if precision == "bf16" else None

        def step():
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        train = rate(step, batch)
        model.eval()

        def infer():
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                model(x)

        inference = rate(infer, batch)
        rates = f"train {train:7.0f} images/s   inference {inference:7.0f} images/s"
        print(f"{preset:14s} {precision:5s} {rates} (batch {batch})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--presets", nargs="+", default=["compact", "compact-s"])
    parser.add_argument("--skip-paper", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}")
    if not args.skip_paper:
        paper_forward(8)
    for preset in args.presets:
        compact(preset, 64)


if __name__ == "__main__":
    main()
