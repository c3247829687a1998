"""What runtime and export choices buy the fast model without retraining, against fer's tflite in one run.

The first shipped ``fer2013-fast`` (compact-xs, global kernels 9/7/5/3) spent about a quarter of its time in the
global branch's first two convolutions (9x9 over 1 channel at 48 px, 7x7 over 4 channels at 24 px), which ONNX
Runtime runs far below its throughput on wider layers; no choice below made it 1.2x fer reliably, so the
shipped student now has 5/5/5/3 kernels (configs/fer2013-fast-xs-k5.yaml). This script measures, for the
shipped model, in alternating rounds with ``fer`` (batch 64):

- ``shipped``: the shipped ONNX file, as the Recognizer runs it;
- ``parallel-*``: the same file with ONNX Runtime's parallel executor (the three branches are independent);
- ``fp32``: the float export (every export here has the default rewrites: norm-after-pool, see benchmarks/rewrites.py);
- ``int8-all``: every layer quantised (calibrated on FER-2013 Training images);
- ``int8-g01``: only the global branch's first two units float;
- ``s2d``: the float export with the first global unit (conv, ReLU, BatchNorm, 2x2 max-pool) rewritten exactly on
  the 2x2 space-to-depth input: one convolution over 4 channels to 4 x 4 filters, then a max over the four
  output phases (max |logit difference| against the model is printed);
- ``s2d-int8``: that rewrite quantised with the default float layers (global branch, first backbone stage).

Then, speed only, untrained ``compact-xs`` students with smaller global-branch kernels (the candidates for the
next distilled model; ``xs`` is the first shipped topology, 9/7/5/3, with fresh weights).

Speed only: top-1 agreement of int8 variants with torch is for benchmarks/onnx_parity.py and
benchmarks/int8_exclusions.py to measure on real crops.

    python benchmarks/fast_variants.py [--threads 2] [--data fer2013] [--checkpoints runs/fer2013-fast-xs-k5]

``--checkpoints``: trained candidates (checkpoint files or run folders), timed as float32 ONNX exports too.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from peers import FerAdapter
from timing import alternating_rates
from torch import nn

from expressnet.hub import load_model, shipped_onnx
from expressnet.nn import create_model
from expressnet.nn.rewrite import space_to_depth_first_unit
from expressnet.runtime import to_float
from expressnet.runtime.onnx import INPUT, calibration_images, cpu_session, export_onnx

# Untrained students: global-branch (filters, kernel) per unit, against compact-xs's (4, 9), (8, 7), (16, 5), (32, 3).
STUDENTS = {
    "xs": None,
    "xs-global-5553": ((4, 5), (8, 5), (16, 5), (32, 3)),
    "xs-global-8x5-333": ((8, 5), (16, 3), (16, 3), (32, 3)),
}


def student(like: nn.Module, global_convs: tuple[tuple[int, int], ...] | None) -> nn.Module:
    """A fresh compact-xs (optionally with other global convs) carrying ``like``'s class names and preprocessing."""
    net = create_model("compact-xs", **({"global_convs": global_convs} if global_convs else {})).eval()
    net.metadata, net.class_names, net.preprocessing = like.metadata, like.class_names, like.preprocessing
    return net


def session_runner(path: Path, x: np.ndarray, threads: int, parallel: int = 0):
    session = cpu_session(path, threads, parallel)
    feed = {INPUT: x.astype(np.float32) / np.float32(255.0)}
    return lambda: session.run(None, feed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", default="fer2013", help="dataset whose Training images calibrate the int8 files")
    parser.add_argument("--checkpoints", nargs="*", default=[], help="trained candidates to time (float32 ONNX)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("fer2013-fast").eval()
    x = np.random.default_rng(0).integers(0, 256, (64, 1, 48, 48), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="expressnet-variants-") as tmp:
        files = {"shipped": shipped_onnx("fer2013-fast")}
        files["fp32"] = export_onnx(model, Path(tmp) / "fp32.onnx")
        calibration = calibration_images(model.preprocessing, args.data, "Training")
        files["int8-all"] = export_onnx(model, Path(tmp) / "all.onnx", True, calibration, keep_float=())
        g01 = ("/model/global_branch/convs/convs.0", "/model/global_branch/convs/convs.1")
        files["int8-g01"] = export_onnx(model, Path(tmp) / "g01.onnx", True, calibration, keep_float=g01)
        rewritten = space_to_depth_first_unit(model)
        with torch.no_grad():
            batch = to_float(torch.from_numpy(x))
            diff = (rewritten(batch) - model(batch)).abs().max().item()
        print(f"s2d rewrite: max |logit difference| against the model {diff:.1e}")
        files["s2d"] = export_onnx(model, Path(tmp) / "s2d.onnx", space_to_depth=True)
        files["s2d-int8"] = export_onnx(model, Path(tmp) / "s2d-int8.onnx", True, calibration, space_to_depth=True)
        runners = {name: session_runner(path, x, args.threads) for name, path in files.items()}
        runners["parallel-2x1"] = session_runner(files["shipped"], x, args.threads, parallel=2)
        for name, convs in STUDENTS.items():
            path = export_onnx(student(model, convs), Path(tmp) / f"{name}.onnx")
            runners[f"untrained {name}"] = session_runner(path, x, args.threads)
        for i, checkpoint in enumerate(args.checkpoints):
            path = export_onnx(load_model(checkpoint), Path(tmp) / f"checkpoint-{i}.onnx")
            runners[Path(checkpoint).name] = session_runner(path, x, args.threads)
        fer = FerAdapter(args.threads)
        runners["fer"] = lambda: fer.predict_probs(x[:, 0])
        speeds = alternating_rates(runners, 64)
    print(f"fer2013-fast variants at batch 64, {args.threads} threads, alternating rounds with fer (best round)")
    for name, speed in speeds.items():
        print(f"{name:28s} {speed:7.0f} faces/s  {speed / speeds['fer']:.2f}x fer")


if __name__ == "__main__":
    main()
