"""Shared fixtures: tiny synthetic datasets built on the fly, untrained tiny checkpoints, and the real data when
present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from expressnet.data import data_root
from expressnet.data.labels import FER2013_CLASSES


def pattern_image(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A gray image whose bright blob position encodes the label (learnable in a few steps)."""
    img = rng.normal(90, 20, (size, size))
    cy, cx = divmod(label, 3)
    y0, x0 = 4 + cy * 14, 4 + cx * 14
    img[y0 : y0 + 12, x0 : x0 + 12] += 120
    return np.clip(img, 0, 255).astype(np.uint8)


def make_fer_npz(path: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    images, labels, split, paths = [], [], [], []
    for name, n in per_class.items():
        for i in range(n):
            y = i % 7
            images.append(pattern_image(y, rng))
            labels.append(y)
            split.append(name)
            paths.append(f"{name}/{FER2013_CLASSES[y]}/{name}_{i}.jpg")
    np.savez_compressed(
        path,
        images=np.stack(images),
        labels=np.array(labels),
        split=np.array(split),
        class_names=np.array(FER2013_CLASSES),
        paths=np.array(paths),
    )
    return path


@pytest.fixture
def synthetic_fer(tmp_path) -> Path:
    """A FER-2013-format npz: 280 Training, 70 PublicTest, 70 PrivateTest pattern images."""
    return make_fer_npz(tmp_path / "synthetic_fer.npz", {"Training": 280, "PublicTest": 70, "PrivateTest": 70})


def save_image(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


REAL = data_root()


def real_data(name: str) -> Path:
    """Path of a real dataset file, or skip the test with the reason."""
    path = REAL / name
    if not path.exists():
        pytest.skip(f"real data {name} not found in {REAL} (set EXPRESSNET_DATA to the folder holding it)")
    return path


@pytest.fixture(scope="session")
def synthetic_fer_shared(tmp_path_factory) -> Path:
    """The :func:`synthetic_fer` dataset, built once per session for session- or module-scoped fixtures
    (read it, never write next to it)."""
    folder = tmp_path_factory.mktemp("synthetic_fer")
    return make_fer_npz(folder / "synthetic_fer.npz", {"Training": 280, "PublicTest": 70, "PrivateTest": 70})


ASTRONAUT = Path(__file__).resolve().parents[1] / "expressnet" / "assets" / "astronaut.jpg"


def save_tiny_checkpoint(path: Path, **metadata) -> Path:
    """An untrained ``tiny`` FER-2013 model (48x48 gray, seed 0) saved at ``path``; ``metadata`` adds to or replaces
    the defaults (no flip averaging, no temperature). torch is imported here, when a test asks for a checkpoint, so
    tests that need none collect without it (and, in the core install without torch, skip)."""
    torch = pytest.importorskip("torch", reason="a torch checkpoint: the torch extra (make test-core runs without)")

    from expressnet.checkpoint import save_checkpoint
    from expressnet.data import Preprocessing
    from expressnet.nn import create_model

    torch.manual_seed(0)
    model = create_model("tiny", num_classes=len(FER2013_CLASSES))
    meta = {
        "model_config": model.config.to_dict(),
        "class_names": list(FER2013_CLASSES),
        "preprocessing": Preprocessing(48, 1).to_dict(),
        "tta_flip": False,
        **metadata,
    }
    return save_checkpoint(path, model.state_dict(), meta)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny FER-2013 checkpoint without flip averaging: the fast model of the pipeline tests
    (predict, stream, bad inputs, summaries)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The same untrained model as :func:`checkpoint`, with a preset name, flip averaging on and a temperature of 2
    to fold: the runtime and export tests check that every backend applies them."""
    folder = tmp_path_factory.mktemp("tiny")
    return save_tiny_checkpoint(
        folder / "tiny.safetensors", preset="tiny", tta_flip=True, temperature=2.0, data={"name": "fer2013"}
    )
