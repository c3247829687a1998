"""Direct vs FFT 'same' convolution for every large-kernel layer of the paper, compact and compact-rgb64
presets (2 threads, batch 8, forward), beside the run-time rule's choice (``fft_conv.use_fft``).

Prints one row per layer: the measured times, the faster path, and what the rule picks; the rule
(kernel >= FFT_MIN_KERNEL and direct multiply-accumulates per image >= FFT_MIN_MACS) was read off these rows.
Direct convolution of the 75x75/50x50 layers takes seconds per image and is measured at batch 1.

    python benchmarks/fft_threshold.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from expressnet.nn import get_config
from expressnet.nn.fft_conv import FFT_MIN_KERNEL, FFT_MIN_MACS, fft_conv2d_same, use_fft


def best_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def preset_layers(presets=("paper", "compact", "compact-rgb64")) -> list[tuple[str, int, int, int, int]]:
    layers = []
    for preset in presets:
        cfg = get_config(preset)
        for branch, convs in (("global", cfg.global_convs), ("local", cfg.local_convs)):
            cin, size = cfg.in_channels, cfg.input_size
            for i, (filters, kernel) in enumerate(convs):
                if kernel >= 9:
                    layers.append((f"{preset}:{branch}{i + 1}", cin, filters, size, kernel))
                cin, size = filters, size // 2
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, batch {args.batch}, torch {torch.__version__}; ms per image, forward")
    print(
        f"{'layer':22s} {'in->out':>9s} {'map':>4s} {'kernel':>6s} {'direct':>10s} {'fft':>9s} "
        f"{'faster':>7s} {'rule':>7s}"
    )
    agree = 0
    layers = preset_layers()
    with torch.inference_mode():
        for name, cin, cout, size, k in layers:
            w = torch.randn(cout, cin, k, k)
            batch = 1 if k >= 50 else args.batch
            x = torch.randn(batch, cin, size, size)
            direct = best_time(lambda: F.conv2d(x, w, padding="same"), 1 if k >= 50 else 3) / batch
            xb = torch.randn(args.batch, cin, size, size)
            fft = best_time(lambda: fft_conv2d_same(xb, w), 3) / args.batch
            faster = "fft" if fft < direct else "direct"
            rule = "fft" if use_fft(xb, w) else "direct"
            agree += faster == rule
            print(
                f"{name:22s} {cin:>4d}->{cout:<4d} {size:>4d} {k:>4d}x{k:<2d} {direct * 1e3:>10.2f} {fft * 1e3:>9.2f} "
                f"{faster:>7s} {rule:>7s}"
            )
    print(
        f"the rule (kernel >= {FFT_MIN_KERNEL}, direct MACs >= {FFT_MIN_MACS:.0e}) picks the faster path "
        f"on {agree}/{len(layers)} layers"
    )


if __name__ == "__main__":
    main()
