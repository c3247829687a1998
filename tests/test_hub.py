"""Shipped models load offline, by name, with the metadata they promise."""

from __future__ import annotations

import socket

import pytest
import torch

import expressnet
from expressnet.checkpoint import CheckpointError
from expressnet.hub import SHIPPED, WEIGHTS_DIR, resolve_model, shipped_models


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_every_shipped_model_is_present_and_small():
    assert set(shipped_models()) == set(SHIPPED), f"missing shipped weights in {WEIGHTS_DIR}"
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir() if p.is_file())  # weights, ONNX files, sidecars
    # four 7.7 M-parameter models as int8 safetensors, the default's int8 ONNX (8.3 MB), fer2013-fast (5.1 MB:
    # float32 weights, as int8 storage changed 1.6 % of its PublicTest predictions, and its float32 ONNX)
    assert total <= 45_000_000, f"shipped weights take {total / 1e6:.1f} MB (at most 45 MB)"


@pytest.mark.parametrize("name", [None, "default", *SHIPPED])
def test_load_model_offline(name, no_network):
    model = expressnet.load_model(name)
    meta = model.metadata
    assert not model.training
    # the small fast model ships float32: int8 storage changed 1.6 % of its PublicTest predictions
    assert meta["weights"] == ("float32" if name == "fer2013-fast" else "int8-per-channel")
    for key in ("class_names", "preprocessing", "train_config", "data", "metrics", "package_version"):
        assert key in meta, key
    assert {"train", "val", "test"} <= set(meta["data"])  # data fingerprints
    assert {"val", "test", "packed"} <= set(meta["metrics"])
    pre = model.preprocessing
    x = torch.rand(2, pre.channels, pre.input_size, pre.input_size)
    with torch.no_grad():
        probs = model(x).softmax(1)
    assert probs.shape == (2, len(model.class_names))
    assert torch.allclose(probs.sum(1), torch.ones(2))


def test_default_is_fer2013_and_ferplus_has_eight_classes():
    assert resolve_model(None) == resolve_model("fer2013")
    assert expressnet.load_model("ferplus").class_names == (
        "neutral",
        "happy",
        "surprise",
        "sad",
        "angry",
        "disgust",
        "fear",
        "contempt",
    )


def test_unknown_model_names_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        expressnet.load_model(tmp_path / "nothing.safetensors")
