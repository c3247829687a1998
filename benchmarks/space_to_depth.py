"""Does the space-to-depth export rewrite (expressnet.nn.rewrite) pay? Each model exported with and without it,
timed in alternating rounds in one run (ONNX Runtime, batch 128, 2 threads by default): the shipped default
model in int8 (first global kernel 17), the shipped fer2013-fast in fp32 (kernel 5) and an untrained compact-xs
(kernel 9, the first fer2013-fast topology). The rewrite's default (``MIN_KERNEL``) rests on these figures.

    python benchmarks/space_to_depth.py [--threads 2] [--data fer2013]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from fast_variants import session_runner, student
from timing import alternating_rates

from expressnet.hub import load_model
from expressnet.runtime.onnx import calibration_images, export_onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", default="fer2013", help="dataset whose Training images calibrate the int8 files")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = np.random.default_rng(0).integers(0, 256, (128, 1, 48, 48), dtype=np.uint8)
    default, fast = load_model("fer2013"), load_model("fer2013-fast")
    calibration = calibration_images(default.preprocessing, args.data, "Training")
    cases = {  # name -> (model, int8)
        "fer2013 int8 (kernel 17)": (default, True),
        "fer2013-fast fp32 (kernel 5)": (fast, False),
        "untrained compact-xs fp32 (kernel 9)": (student(fast, None), False),
    }
    runners = {}
    with tempfile.TemporaryDirectory(prefix="expressnet-s2d-") as tmp:
        for i, (name, (model, int8)) in enumerate(cases.items()):
            for rewrite in (False, True):
                path = export_onnx(model, Path(tmp) / f"{i}-{rewrite}.onnx", int8, calibration, space_to_depth=rewrite)
                runners[(name, rewrite)] = session_runner(path, x, args.threads)
        speeds = alternating_rates(runners, len(x))
    print(f"space-to-depth export rewrite, batch {len(x)}, {args.threads} threads, alternating rounds (best round)")
    for name in cases:
        plain, rewritten = speeds[(name, False)], speeds[(name, True)]
        print(f"{name:38s} {plain:7.0f} -> {rewritten:7.0f} faces/s  {rewritten / plain:.2f}x")


if __name__ == "__main__":
    main()
