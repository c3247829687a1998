"""The peer-model adapters of benchmarks/peers.py: class orders mapped to FER-2013's by name, and each peer
well above chance on 200 FER-2013 PrivateTest images (a wrong class mapping or preprocessing falls to chance).
The peer checks are skipped unless ``make bench-peers`` installed the peers and the real data is present."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import real_data

from expressnet.data import Split, load_dataset
from expressnet.data.labels import FER2013_CLASSES

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"


@pytest.fixture(scope="module")
def peers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmarks_peers", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def private_200() -> tuple[np.ndarray, Split]:
    real_data("fer2013.npz")
    split = load_dataset("fer2013").split("PrivateTest")
    keep = np.linspace(0, len(split) - 1, 200).astype(int)  # rows are sorted by class: spread over all
    sub = split.subset(keep)
    return np.ascontiguousarray(sub.images), sub


def test_class_order_mapped_by_name(peers):
    facex = ("anger", "disgust", "fear", "happy", "neutral", "sadness", "surprised")
    probs = np.eye(7)  # row i: class i of facex
    mapped = peers.to_fer2013_order(probs, facex)
    assert [FER2013_CLASSES[j] for j in mapped.argmax(1)] == [
        "angry",
        "disgust",
        "fear",
        "happy",
        "neutral",
        "sad",
        "surprise",
    ]


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("key", ["fer", "what-the-face", "facex"])
def test_peer_well_above_chance(peers, private_200, key):
    dist, adapter_class = peers.PEERS[key]
    try:
        adapter = adapter_class(threads=1)
    except peers.PeerMissing as exc:
        pytest.skip(f"{dist}: {exc} (make bench-peers installs it)")
    images, split = private_200
    probs = adapter.predict_probs(images)
    assert probs.shape == (len(images), 7)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    accuracy = float(np.mean(probs.argmax(axis=1) == split.labels))
    assert accuracy > 0.35, f"{adapter.name}: accuracy {accuracy:.3f} on 200 PrivateTest images"
