"""Checkpoints round-trip exactly, are written atomically, and bad files give clear errors."""

import json

import pytest
import torch

from expressnet.checkpoint import (
    CheckpointError,
    average_checkpoints,
    build_model,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from expressnet.data import Preprocessing
from expressnet.nn import create_model


def save_tiny(path):
    torch.manual_seed(0)
    model = create_model("tiny", num_classes=3).eval()
    meta = {
        "model_config": model.config.to_dict(),
        "class_names": ["happy", "sad", "neutral"],
        "preprocessing": Preprocessing(48, 1).to_dict(),
        "metrics": {"val": {"accuracy": 0.5}},
    }
    save_checkpoint(path, model.state_dict(), meta)
    return model


def test_round_trip(tmp_path):
    path = tmp_path / "m.safetensors"
    model = save_tiny(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]  # no temp files left
    loaded = build_model(path)
    x = torch.rand(4, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.class_names == ("happy", "sad", "neutral")
    assert loaded.preprocessing == Preprocessing(48, 1)
    assert json.loads(path.with_suffix(".json").read_text())["metrics"]["val"]["accuracy"] == 0.5
    state, meta = load_checkpoint(path)
    assert meta["format"] == "expressnet-checkpoint/1" and set(state) == set(model.state_dict())


def test_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_metadata(tmp_path / "none.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"junk\.safetensors"):
        read_metadata(junk)
    path = tmp_path / "m.safetensors"
    save_tiny(path)
    state, meta = load_checkpoint(path)
    meta["model_config"]["num_classes"] = 5  # weights no longer fit the described model
    save_checkpoint(path, state, meta)
    with pytest.raises(CheckpointError, match="do not match"):
        build_model(path)


def test_overwrite_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_tiny(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("expressnet.checkpoint.save_file", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"w": torch.zeros(1)}, {})
    assert path.read_bytes() == before  # the old checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


def test_int8_packing_is_small_close_and_stable(tmp_path):
    from expressnet.checkpoint import pack_checkpoint

    src = tmp_path / "full.safetensors"
    model = save_tiny(src)
    packed = pack_checkpoint(src, tmp_path / "packed.safetensors")
    assert packed.stat().st_size < src.stat().st_size / 2.5
    loaded = build_model(packed)
    x = torch.rand(8, 1, 48, 48)
    with torch.no_grad():
        ref, out = model(x), loaded(x)
    assert torch.allclose(torch.softmax(out, 1), torch.softmax(ref, 1), atol=0.02)
    assert loaded.metadata["weights"] == "int8-per-channel"
    # loading and saving again (e.g. to add metrics) stores exactly the same tensors
    state, meta = load_checkpoint(packed)
    save_checkpoint(tmp_path / "again.safetensors", state, meta)
    from safetensors.torch import load_file

    a, b = load_file(str(packed)), load_file(str(tmp_path / "again.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="overwrite its source"):
        pack_checkpoint(packed, packed)
    before = packed.read_bytes(), packed.with_suffix(".json").read_bytes()
    with pytest.raises(ValueError, match=r"packed.safetensors exists; add --overwrite"):
        pack_checkpoint(src, packed, "float32")  # a file the user had is never replaced silently
    assert (packed.read_bytes(), packed.with_suffix(".json").read_bytes()) == before
    sidecar_only = tmp_path / "other.safetensors"
    sidecar_only.with_suffix(".json").write_text("{}")
    with pytest.raises(ValueError, match=r"other.json exists"):
        pack_checkpoint(src, sidecar_only)
    assert build_model(pack_checkpoint(src, packed, "float32", overwrite=True)).metadata["weights"] == "float32"


def test_temperature_in_metadata_divides_the_logits(tmp_path):
    path = tmp_path / "m.safetensors"
    model = save_tiny(path)
    state, meta = load_checkpoint(path)
    save_checkpoint(tmp_path / "t.safetensors", state, {**meta, "temperature": 2.5})
    warm = build_model(tmp_path / "t.safetensors")
    x = torch.rand(4, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(warm(x), model(x) / 2.5, atol=1e-5)
    assert torch.equal(load_checkpoint(tmp_path / "t.safetensors")[0]["head.weight"], state["head.weight"])
    for bad in (0, -1.0, "hot", float("nan")):
        save_checkpoint(tmp_path / "bad.safetensors", state, {**meta, "temperature": bad})
        with pytest.raises(CheckpointError, match=r"bad\.safetensors: temperature must be a positive number"):
            build_model(tmp_path / "bad.safetensors")


def test_average_of_checkpoints_is_the_mean_of_their_weights(tmp_path):
    first = save_tiny(tmp_path / "a.safetensors")
    state, meta = load_checkpoint(tmp_path / "a.safetensors")
    shifted = {k: v + 1.0 if v.is_floating_point() else v for k, v in state.items()}
    save_checkpoint(tmp_path / "b.safetensors", shifted, {**meta, "temperature": 0.5})
    average, soup_meta = average_checkpoints([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    for key, value in first.state_dict().items():
        expected = value + 0.5 if value.is_floating_point() else value
        torch.testing.assert_close(average[key], expected)
    assert "metrics" not in soup_meta and "temperature" not in soup_meta  # they described one member's weights
    assert soup_meta["soup"]["members"] == [str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]
    assert soup_meta["class_names"] == ["happy", "sad", "neutral"]

    other = create_model("tiny", num_classes=3, fusion_dim=16)
    save_checkpoint(tmp_path / "c.safetensors", other.state_dict(), {**meta, "model_config": other.config.to_dict()})
    with pytest.raises(CheckpointError, match=r"c\.safetensors: its model_config differs"):
        average_checkpoints([tmp_path / "a.safetensors", tmp_path / "c.safetensors"])
    with pytest.raises(ValueError, match="two checkpoints"):
        average_checkpoints([tmp_path / "a.safetensors"])
