"""Which layers should stay float in a model's int8 ONNX export: top-1 agreement with torch per choice.

Agreement is measured on Training images that calibration does not use (a seeded sample disjoint from the
calibration sample), or with ``--split`` on a validation split (never a test split). Each candidate group is
tried alone, then the best ones together, greedily, while agreement improves.

    python benchmarks/int8_exclusions.py [--model fer2013] [--tuning 2048] [--split PublicTest]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from expressnet.data import load_dataset, prepare_split
from expressnet.hub import load_model
from expressnet.runtime import TorchClassifier
from expressnet.runtime.onnx import OnnxClassifier, calibration_indices, export_onnx

GROUPS = {  # node-name prefixes in the exported graph
    "moe gates": ("/model/moe_global/gate", "/model/moe_expression/gate"),
    "moe experts": ("/model/moe_global/experts", "/model/moe_expression/experts"),
    "head": ("/model/head",),
    "fusion fc": ("/model/fusion/fc",),
    "global fc": ("/model/global_branch/fc",),
    "global convs": ("/model/global_branch/convs",),
    "local convs": ("/model/local_branch/convs",),
    "backbone layer4": ("/model/backbone/layer4",),
    "backbone layer1": ("/model/backbone/layer1",),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fer2013")
    parser.add_argument("--calibration", type=int, default=1024)
    parser.add_argument("--tuning", type=int, default=2048)
    parser.add_argument("--split", help="a validation split to measure agreement on (default: Training images)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net = load_model(args.model)
    data = net.metadata.get("data", {}).get("name", "fer2013").split("+")[0]
    dataset = load_dataset(data)
    if args.split and args.split in dataset.split_names("test"):
        parser.error(f"--split {args.split}: choose on a validation split, not a test split")
    train = dataset.split("train")
    # the calibration sample is calibration_images' own; tuning images are drawn from the rest
    calib_idx = calibration_indices(len(train), args.calibration)
    rest = np.setdiff1d(np.arange(len(train)), calib_idx)
    tune_idx = np.sort(np.random.default_rng(1).choice(rest, size=args.tuning, replace=False))
    calibration = prepare_split(train.subset(calib_idx), net.preprocessing, progress=False).images.numpy()
    tuning = dataset.split(args.split) if args.split else train.subset(tune_idx)
    x = prepare_split(tuning, net.preprocessing, progress=False).images.numpy()
    reference = TorchClassifier(net).logits(x).argmax(1)

    with tempfile.TemporaryDirectory() as tmp:

        def agreement(keep: tuple[str, ...]) -> float:
            start = time.perf_counter()
            path = export_onnx(net, Path(tmp) / "q.onnx", True, calibration, keep_float=keep)
            q = OnnxClassifier(path, threads=args.threads)
            mb = path.stat().st_size / 1e6
            a = float((q.logits(x).argmax(1) == reference).mean())
            print(
                f"  {a:.2%} agreement, {mb:.1f} MB, {time.perf_counter() - start:.0f} s: {keep or 'none'}", flush=True
            )
            return a

        base = agreement(())
        alone = {name: agreement(prefixes) for name, prefixes in GROUPS.items()}
        chosen: tuple[str, ...] = ()
        best = base
        for name in sorted(alone, key=alone.get, reverse=True):
            if alone[name] <= base:
                break
            trial = agreement(chosen + GROUPS[name])
            if trial > best:
                chosen, best = chosen + GROUPS[name], trial
        where = args.split or "held-out Training images"
        print(f"{args.model}: int8 top-1 agreement on {len(x)} {where}: {base:.2%} with every layer")
        print(f"quantised, {best:.2%} keeping float: {chosen or 'nothing'}")


if __name__ == "__main__":
    main()
