"""ONNX exports against torch on the real test protocols: fp32 max |logit difference|, int8 top-1 agreement and
accuracy / macro-F1 per protocol, for every shipped model. Each precision is the shipped file where the model
ships one of that precision (``hub.SHIPPED_ONNX``), else exported in the run (int8 as ``expressnet export MODEL
--int8`` does it: calibrated on 1,024 images of the model's own training split, the model's own float layers
(``hub.INT8_KEEP_FLOAT``) or the default ones kept float).

    python benchmarks/onnx_parity.py [--models fer2013 rafdb] [--keep-float /model/head ...]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path

import numpy as np
import torch

from expressnet.data import load_dataset, prepare_split
from expressnet.evaluate.metrics import classification_metrics
from expressnet.hub import int8_keep_float, load_model, shipped_models, shipped_onnx
from expressnet.runtime import TorchClassifier
from expressnet.runtime.onnx import OnnxClassifier, calibration_images, export_onnx

PROTOCOLS = {  # a model's training data -> its validation and test protocols (dataset, split)
    "fer2013": [("fer2013", "PublicTest"), ("fer2013", "PrivateTest"), ("fer2013", "PublicTest+PrivateTest")],
    "ferplus": [("ferplus", "PublicTest"), ("ferplus", "PrivateTest"), ("ferplus-majority", "PrivateTest")],
    "rafdb": [("rafdb", "val"), ("rafdb", "test")],
}


def protocols(data: str) -> list[tuple[str, str]]:
    """Each dataset's protocols for a model trained on ``data`` (``fer2013+rafdb``: both datasets')."""
    return [p for part in data.split("+") for p in PROTOCOLS.get(part, [(part, "val"), (part, "test")])]


dataset = functools.cache(load_dataset)  # each dataset is read once, however many models and splits use it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="shipped names or checkpoints (default: every shipped model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--keep-float",
        nargs="+",
        metavar="PREFIX",
        help="layers an int8 export in the run keeps float (default: the model's hub.INT8_KEEP_FLOAT, else "
        "KEEP_FLOAT; a shipped int8 file is used as it is)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models or list(shipped_models()):
            try:
                net = load_model(name)
            except Exception as exc:  # not shipped in this checkout
                print(f"{name}: skipped ({exc})")
                continue
            reference = TorchClassifier(net)
            fp32_file = shipped_onnx(name, "float32")
            fp32_how = "shipped" if fp32_file else "exported in the run"
            fp32 = OnnxClassifier(fp32_file or export_onnx(net, Path(tmp) / f"{name}.onnx"))
            int8_file, how = shipped_onnx(name, "int8"), "shipped"
            training_data = net.metadata.get("data", {}).get("name")
            if int8_file is None and training_data:
                calibration = calibration_images(net.preprocessing, training_data)
                int8_file = export_onnx(
                    net,
                    Path(tmp) / f"{name}.int8.onnx",
                    True,
                    calibration,
                    keep_float=tuple(args.keep_float) if args.keep_float else int8_keep_float(name),
                )
                how = "exported in the run"
            int8 = OnnxClassifier(int8_file) if int8_file is not None else None
            for data, split in protocols(training_data or "fer2013"):
                prepared = prepare_split(dataset(data).split(split).relabel(net.class_names), net.preprocessing, False)
                x, y = prepared.images.numpy(), prepared.labels.numpy()
                ref = reference.logits(x)
                diff = np.abs(fp32.logits(x) - ref).max()
                m = classification_metrics(reference.probabilities(x), y, net.class_names)
                line = (
                    f"{name} {data} {split} (n={len(y)}): torch {m['accuracy']:.4f} / F1 {m['macro_f1']:.4f}; "
                    f"fp32 ONNX ({fp32_how}) max |dlogit| {diff:.1e}"
                )
                if int8 is not None:
                    q = int8.logits(x)
                    mq = classification_metrics(int8.probabilities(x), y, net.class_names)
                    agree = (q.argmax(1) == ref.argmax(1)).mean()
                    line += (
                        f"; int8 ONNX ({how}) {mq['accuracy']:.4f} / F1 {mq['macro_f1']:.4f} "
                        f"({100 * (mq['accuracy'] - m['accuracy']):+.2f} pt), top-1 agreement {agree:.2%}"
                    )
                print(line, flush=True)


if __name__ == "__main__":
    main()
