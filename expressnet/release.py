"""Release a trained checkpoint (``expressnet pack``): int8 weights, a softmax temperature (optionally with
per-class biases: BCTS) fitted on the validation split (never on test) and folded into the model, the packed
model's own metrics recorded in its metadata, and the sampled check (:func:`record_check`) that
``tests/test_shipped.py`` recomputes for every shipped model. The step between ``train`` and shipping: it uses
``evaluate`` (calibration, metrics) and sits beside ``train`` in the layers (docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import INT8, add_logit_bias, fold_temperature, load_checkpoint, pack_checkpoint, save_checkpoint
from .data import Dataset, load_dataset, prepare_split
from .evaluate.calibration import bias_gain, fit_bias_corrected_temperature, fit_temperature
from .evaluate.core import evaluate_prepared
from .hub import load_model, resolve_model
from .runtime import predict_logits

BRIEF = ("n", "accuracy", "macro_f1", "balanced_accuracy", "ece", "nll")


@dataclass
class PackResult:
    path: Path
    temperature: float | None = None  # the model's temperature after packing, when calibrated
    calibrated_on: str | None = None
    logit_bias: list[float] | None = None  # with class_bias: the model's per-class biases after packing
    bias_gain: tuple[float, float] | None = None  # with class_bias: held-out accuracy gain on val (mean, sd)
    metrics: dict[str, dict] = field(default_factory=dict)  # role (val/test) -> brief metrics of the packed model


def pack_model(
    source: str | Path,
    target: str | Path,
    weights: str = INT8,
    data: str | None = None,
    val_split: str = "val",
    test_split: str = "test",
    calibrate: bool = True,
    class_bias: bool = False,
    overwrite: bool = False,
) -> PackResult:
    """Copy ``source`` (a checkpoint, run folder or shipped name) to ``target`` with ``weights`` storage; with
    ``data``, fit a temperature on its ``val_split`` (if ``calibrate``; with ``class_bias`` per-class biases too,
    BCTS, which can change predictions: their held-out gain on ``val_split`` is measured and recorded) and record
    the packed model's metrics on ``val_split`` and ``test_split`` in the metadata (``metrics.packed``). The
    source is never modified; a ``target`` that exists is refused unless ``overwrite``."""
    if class_bias and not (calibrate and data):
        raise ValueError("class biases are fitted with the temperature: give data and keep calibrate on")
    out = pack_checkpoint(resolve_model(source), target, weights, overwrite)
    result = PackResult(Path(out))
    if data is None:
        return result
    net = load_model(out)
    tta = net.metadata.get("tta_flip", False)
    dataset = load_dataset(data)
    chosen = {"val": dataset.split(val_split), "test": dataset.split(test_split)}
    prepared = {
        role: prepare_split(split.relabel(net.class_names), net.preprocessing) for role, split in chosen.items()
    }
    fields = {}
    if calibrate:
        val = prepared["val"]
        logits = predict_logits(net, val.images, tta_flip=tta)  # already divided by any earlier temperature
        calibration = {"method": "temperature", "data": dataset.name, "split": chosen["val"].name}
        bias = [0.0] * len(net.class_names)
        if class_bias:
            extra, bias = fit_bias_corrected_temperature(logits, val.labels)
            result.bias_gain = bias_gain(logits, val.labels)
            calibration |= {"method": "temperature+bias (BCTS)", "held_out_gain": list(result.bias_gain)}
        else:
            extra = fit_temperature(logits, val.labels)
        fold_temperature(net.head, extra)
        add_logit_bias(net.head, bias)
        earlier = net.metadata.get("logit_bias")  # logits / extra + bias on top of (T, b): b / extra + bias
        if class_bias or earlier is not None:
            result.logit_bias = [e / extra + b for e, b in zip(earlier or [0.0] * len(bias), bias, strict=True)]
        result.temperature = net.metadata.get("temperature", 1.0) * extra
        result.calibrated_on = chosen["val"].name
        fields = {"temperature": result.temperature, "logit_bias": result.logit_bias, "calibration": calibration}
    for role, split in chosen.items():
        with torch.no_grad():
            m = evaluate_prepared(net, prepared[role], tta, routing=False)
        result.metrics[role] = {k: m[k] for k in BRIEF} | {"data": dataset.name, "split": split.name}
    state, meta = load_checkpoint(out)
    metrics = {**meta.get("metrics", {}), "packed": result.metrics}
    save_checkpoint(out, state, {**meta, **fields, "metrics": metrics})
    record_check(out, data, chosen["val"].name)
    return result


def record_check(path: str | Path, data: str | Dataset, split: str, n: int = 300, seed: int = 0) -> dict:
    """Accuracy and macro-F1 of the checkpoint at ``path`` (the torch model, flip averaging as its metadata
    says) on a fixed sample of ``n`` images of ``split`` (sorted indices drawn by ``numpy.random.default_rng(seed)``
    without replacement), written into its metadata as ``metrics.check`` (the weights are rewritten unchanged,
    the ``.json`` sidecar too). ``tests/test_shipped.py`` recomputes it for the shipped models."""
    net = load_model(path)
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    chosen = dataset.split(split)
    size = min(n, len(chosen))
    idx = np.sort(np.random.default_rng(seed).choice(len(chosen), size=size, replace=False))
    prepared = prepare_split(chosen.subset(idx).relabel(net.class_names), net.preprocessing, progress=False)
    with torch.no_grad():
        m = evaluate_prepared(net, prepared, net.metadata.get("tta_flip", False), routing=False)
    name = data if isinstance(data, str) else dataset.name
    check = {"data": name, "split": chosen.name, "n": int(m["n"]), "seed": seed}
    check |= {"accuracy": float(m["accuracy"]), "macro_f1": float(m["macro_f1"])}
    state, meta = load_checkpoint(path)
    save_checkpoint(path, state, {**meta, "metrics": {**meta.get("metrics", {}), "check": check}})
    return check
