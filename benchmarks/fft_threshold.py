"""Direct vs FFT 'same' convolution for every conv layer of the paper preset (2 threads, batch 8, forward).

Prints one row per layer and the smallest kernel from which FFT wins on every larger layer, which is how
``DEFAULT_FFT_MIN_KERNEL`` was chosen. Direct convolution of the 75x75/50x50 layers takes seconds per image
and is measured at batch 1.

    python benchmarks/fft_threshold.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from expressnet.nn import get_config
from expressnet.nn.fft_conv import DEFAULT_FFT_MIN_KERNEL, fft_conv2d_same


def best_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def paper_layers() -> list[tuple[str, int, int, int, int]]:
    cfg = get_config("paper")
    layers = []
    for branch, convs in (("global", cfg.global_convs), ("local", cfg.local_convs)):
        cin, size = cfg.in_channels, cfg.input_size
        for i, (filters, kernel) in enumerate(convs):
            layers.append((f"{branch}{i + 1}", cin, filters, size, kernel))
            cin, size = filters, size // 2
    return layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, batch {args.batch}, torch {torch.__version__}; ms per image, forward")
    print(f"{'layer':8s} {'in->out':>9s} {'map':>4s} {'kernel':>6s} {'direct':>10s} {'fft':>9s} {'winner':>7s}")
    rows = []
    with torch.inference_mode():
        for name, cin, cout, size, k in paper_layers():
            w = torch.randn(cout, cin, k, k)
            batch = 1 if k >= 50 else args.batch
            x = torch.randn(batch, cin, size, size)
            direct = best_time(lambda: F.conv2d(x, w, padding="same"), 1 if k >= 50 else 3) / batch
            xb = torch.randn(args.batch, cin, size, size)
            fft = best_time(lambda: fft_conv2d_same(xb, w), 3) / args.batch
            rows.append((k, direct, fft))
            print(f"{name:8s} {cin:>4d}->{cout:<4d} {size:>4d} {k:>4d}x{k:<2d} {direct * 1e3:>10.2f} {fft * 1e3:>9.2f} "
                  f"{'fft' if fft < direct else 'direct':>7s}")  # fmt: skip
    kernels = sorted({k for k, _, _ in rows})
    threshold = next((k for k in kernels if all(f < d for kk, d, f in rows if kk >= k)), None)
    print(f"smallest kernel from which FFT wins on every layer at least that large: {threshold} "
          f"(DEFAULT_FFT_MIN_KERNEL = {DEFAULT_FFT_MIN_KERNEL})")  # fmt: skip


if __name__ == "__main__":
    main()
