"""Do the exact export rewrites (expressnet.nn.rewrite) pay? Each model exported four ways (no rewrite,
space-to-depth only, norm-after-pool only, both), timed in alternating rounds in one run (ONNX Runtime, batch 128,
2 threads by default): the shipped default model in int8 (first global kernel 17), the shipped fer2013-fast in
fp32 (kernel 5) and an untrained compact-xs (kernel 9, the first fer2013-fast topology). The defaults of
``export_onnx`` (space-to-depth from ``MIN_KERNEL``; norm-after-pool wherever it applies) rest on these figures.

    python benchmarks/rewrites.py [--threads 2] [--data fer2013]
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
from expressnet.runtime.onnx import OnnxClassifier, calibration_images, export_onnx

WAYS = {  # column -> (space_to_depth, norm_after_pool)
    "none": (False, False),
    "s2d": (True, False),
    "norm": (False, True),
    "both": (True, True),
}


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
    runners, differences = {}, {}
    with tempfile.TemporaryDirectory(prefix="expressnet-rewrites-") as tmp:
        for i, (name, (model, int8)) in enumerate(cases.items()):
            outputs = {}
            for way, (s2d, norm) in WAYS.items():
                path = export_onnx(
                    model, Path(tmp) / f"{i}-{way}.onnx", int8, calibration, space_to_depth=s2d, norm_after_pool=norm
                )
                runners[(name, way)] = session_runner(path, x, args.threads)
                outputs[way] = OnnxClassifier(path).logits(x)
            differences[name] = max(np.abs(outputs[w] - outputs["none"]).max() for w in WAYS)
        speeds = alternating_rates(runners, len(x))
    print(f"export rewrites, faces/s at batch {len(x)}, {args.threads} threads, alternating rounds (best round);")
    print("ratios against no rewrite; last column: max |logit difference| of any way from no rewrite")
    print(f"{'':38s} {'none':>7s} {'s2d':>13s} {'norm':>13s} {'both':>13s}")
    for name in cases:
        plain = speeds[(name, "none")]
        cells = [f"{speeds[(name, w)]:7.0f} {speeds[(name, w)] / plain:4.2f}x" for w in ("s2d", "norm", "both")]
        print(f"{name:38s} {plain:7.0f} {' '.join(cells)}  {differences[name]:.1e}")


if __name__ == "__main__":
    main()
