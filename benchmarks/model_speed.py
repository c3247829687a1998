"""Classifier speed and accuracy, model x backend x precision, in one run on this CPU (2 threads by default).

For each model (shipped name or checkpoint): images/s at batch 1 and batch 64 on the test crops of its
dataset (no flip averaging, as a throughput figure), then test accuracy and macro-F1 through that backend
(with the model's own flip averaging). Backends: torch fp32 and bf16, ONNX Runtime fp32 and int8 (the shipped
file where the model ships that precision, else exported in the run, int8 calibrated on training images). Then
the peer ``fer`` (mini-Xception tflite) measured the same way, the speed of each model's shipped ONNX file (else
its int8 export) against it, and the default
``Recognizer`` classifier path against the torch path of before the runtime layer (FFT for the 17x17
convolution, flip averaging).

    python benchmarks/model_speed.py [--threads 2] [--models fer2013 ferplus runs/fer2013-fast] [--no-accuracy]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from peers import FerAdapter, PeerMissing
from timing import alternating_rates, calls_per_second

import expressnet.nn.fft_conv as fft_conv
from expressnet.data import load_dataset, prepare_split
from expressnet.evaluate.metrics import classification_metrics
from expressnet.hub import int8_keep_float, load_model, shipped_onnx
from expressnet.runtime import Classifier, TorchClassifier, load_classifier
from expressnet.runtime.onnx import OnnxClassifier, calibration_images, export_onnx


def rate(fn, images: int, seconds: float) -> float:
    return images * calls_per_second(fn, seconds)


@contextlib.contextmanager
def legacy_fft() -> Iterator[None]:
    """The rule before the runtime layer: FFT for every kernel of 16 and more, whatever the map size."""
    rule = fft_conv.use_fft
    fft_conv.use_fft = lambda x, weight: min(weight.shape[-2:]) >= 16
    try:
        yield
    finally:
        fft_conv.use_fft = rule


def backends(name: str, tmp: Path, threads: int) -> Iterator[tuple[str, str, str, Classifier]]:
    """(backend, precision, where the file comes from, classifier): torch fp32 and bf16, then ONNX Runtime fp32
    and int8, each the shipped file where the model ships that precision, else exported in the run."""
    net = load_model(name)
    yield "torch", "fp32", "", TorchClassifier(net)
    yield "torch", "bf16", "", TorchClassifier(net, precision="bf16")
    fp32, int8 = shipped_onnx(name, "float32"), shipped_onnx(name, "int8")
    if fp32 is not None:
        yield "onnx", "fp32", "shipped", OnnxClassifier(fp32, threads=threads)
    else:
        yield "onnx", "fp32", "exported", OnnxClassifier(export_onnx(net, tmp / f"{name}.onnx"), threads=threads)
    if int8 is not None:
        yield "onnx", "int8", "shipped", OnnxClassifier(int8, threads=threads)
    else:
        data = net.metadata.get("data", {}).get("name", "fer2013")
        calibration = calibration_images(net.preprocessing, data)
        int8 = export_onnx(net, tmp / f"{name}.int8.onnx", True, calibration, keep_float=int8_keep_float(name))
        yield "onnx", "int8", "exported", OnnxClassifier(int8, threads=threads)


TEST_SPLIT = {"fer2013": "PrivateTest", "ferplus": "PrivateTest", "rafdb": "test"}


def test_crops(name: str, classifier: Classifier, cache: dict) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The test crops of the model's own dataset (FER-2013 or FER+ PrivateTest, RAF-DB test; the first dataset of
    a combination such as fer2013+rafdb), prepared as the model expects."""
    data = classifier.metadata.get("data", {}).get("name", "fer2013").split("+")[0]
    data = data if data in TEST_SPLIT else "fer2013"
    key = (data, tuple(classifier.class_names), classifier.preprocessing)
    if key not in cache:
        split = load_dataset(data).split(TEST_SPLIT[data]).relabel(classifier.class_names)
        prepared = prepare_split(split, classifier.preprocessing, progress=False)
        cache[key] = (prepared.images.numpy(), prepared.labels.numpy(), f"{data} {TEST_SPLIT[data]}")
    return cache[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["fer2013", "ferplus", "fer2013-fast"])
    parser.add_argument("--seconds", type=float, default=4.0, help="timing per figure")
    parser.add_argument("--no-accuracy", dest="accuracy", action="store_false")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}")
    print(
        f"{'model':14s} {'backend':8s} {'prec':5s} {'b=1 img/s':>10s} {'b=64 img/s':>11s} "
        f"{'accuracy':>9s} {'macro-F1':>9s}"
    )
    cache: dict = {}
    deployed: dict[str, tuple[str, Classifier]] = {}  # per model: the shipped ONNX file, else the int8 export
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            try:
                load_model(name)
            except Exception as exc:  # not shipped here: say so and go on
                print(f"{name:14s} skipped: {exc}")
                continue
            for backend, precision, origin, classifier in backends(name, Path(tmp), args.threads):
                x, y, split = test_crops(name, classifier, cache)
                one = rate(lambda c=classifier, x=x: c.logits(x[:1], tta_flip=False), 1, args.seconds)
                many = rate(lambda c=classifier, x=x: c.logits(x[:64], tta_flip=False), 64, args.seconds)
                if origin == "shipped" or (precision == "int8" and name not in deployed):
                    deployed[name] = (f"{precision} ONNX ({origin})", classifier)
                acc = f1 = float("nan")
                if args.accuracy:
                    m = classification_metrics(classifier.probabilities(x), y, classifier.class_names)
                    acc, f1 = m["accuracy"], m["macro_f1"]
                print(
                    f"{name:14s} {backend:8s} {precision:5s} {one:>10.0f} {many:>11.0f} {acc:>9.4f} {f1:>9.4f}  "
                    f"{split}{f' ({origin} file)' if origin else ''}",
                    flush=True,
                )
        fer = None
        try:
            fer = FerAdapter(args.threads)
            x, y, split = test_crops("fer2013", load_classifier("fer2013", "torch"), cache)
            gray = x[:, 0]
            one = rate(lambda: fer.predict_probs(gray[:1]), 1, args.seconds)
            fer_rate = rate(lambda: fer.predict_probs(gray[:64]), 64, args.seconds)
            m = classification_metrics(fer.predict_probs(gray), y, fer.class_names) if args.accuracy else None
            acc, f1 = (m["accuracy"], m["macro_f1"]) if m else (float("nan"),) * 2
            print(
                f"{'fer (peer)':14s} {'tflite':8s} {'int8':5s} {one:>10.0f} {fer_rate:>11.0f} {acc:>9.4f} "
                f"{f1:>9.4f}  {split}"
            )
        except PeerMissing as exc:
            print(f"fer (peer) skipped: {exc} (make bench-peers installs it)")

        print(
            "\ndefault Recognizer classifier path vs the torch path before the runtime layer (batch 64, flip averaging)"
        )
        x, _, _ = test_crops("fer2013", load_classifier("fer2013", "torch"), cache)
        old_path, default = TorchClassifier(load_model()), load_classifier(None, "auto")
        best = {"before": float("inf"), "now": float("inf")}
        for _ in range(8):  # alternating rounds: a busy CPU slows both alike
            with legacy_fft():
                start = time.perf_counter()
                old_path.logits(x[:64])
                best["before"] = min(best["before"], time.perf_counter() - start)
            start = time.perf_counter()
            default.logits(x[:64])
            best["now"] = min(best["now"], time.perf_counter() - start)
        before, now = 64 / best["before"], 64 / best["now"]
        print(
            f"before (torch, FFT 17x17): {before:.0f} img/s; now ({default.backend} {default.precision}, the "
            f"record's inference file): {now:.0f} img/s; speed-up {now / before:.2f}x"
        )
        if fer is not None and deployed:
            # pairwise: an ONNX Runtime session's threads spin for a while after each call, which slows whatever
            # runs next, so each model alternates with fer alone
            print(
                "\nthe shipped ONNX file (else the int8 export) against fer's tflite at batch 64, each in "
                "alternating rounds with fer (best round)"
            )
            for name, (what, c) in deployed.items():
                ours = lambda c=c: c.logits(x[:64], tta_flip=False)  # noqa: E731
                speeds = alternating_rates({name: ours, "fer": lambda: fer.predict_probs(x[:64, 0])}, 64)
                print(
                    f"{name} {what} {speeds[name]:.0f} faces/s vs fer tflite {speeds['fer']:.0f}: "
                    f"{speeds[name] / speeds['fer']:.2f}x"
                )


if __name__ == "__main__":
    main()
