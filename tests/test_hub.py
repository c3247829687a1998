"""Shipped models: one record each (expressnet/weights/models.json) that the files, the checkpoints' and ONNX
files' metadata, the backend rule, the CLI and the README's table agree with; loading offline, by name."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import expressnet
from expressnet.cli import app
from expressnet.hub import (
    SHA_PREFIX,
    WEIGHTS_DIR,
    CheckpointError,
    default_model,
    get_record,
    list_models,
    markdown_table,
    records,
    resolve_model,
    shipped_models,
)
from expressnet.io import file_sha256
from expressnet.runtime import auto_backend, load_classifier
from expressnet.runtime.ort import OnnxClassifier, read_onnx_metadata

README = Path(__file__).resolve().parents[1] / "README.md"
RECORDS = records()


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def checkpoint_metadata(path: Path) -> dict:
    """The ExpressNet metadata a safetensors file embeds, read from its JSON header (no torch)."""
    with path.open("rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return json.loads(header["__metadata__"]["expressnet"])


@pytest.mark.parametrize("name", list(RECORDS))
def test_every_file_of_every_record_has_its_recorded_sha256(name):
    record = RECORDS[name]
    assert record.checkpoint in record.files and record.inference in record.files
    for file, facts in record.files.items():
        path = WEIGHTS_DIR / file
        assert path.is_file(), f"{name}: {file} is missing from {WEIGHTS_DIR}"
        assert path.stat().st_size == facts["bytes"], f"{name}: {file} changed size; rerun model_records.py"
        assert file_sha256(path) == facts["sha256"], f"{name}: {file} changed; rerun benchmarks/model_records.py"


@pytest.mark.parametrize("name", list(RECORDS))
def test_each_record_agrees_with_its_files(name):
    record = RECORDS[name]
    meta = checkpoint_metadata(record.checkpoint_path)
    assert list(record.classes) == meta["class_names"]
    assert record.preprocessing == meta["preprocessing"] and record.tta_flip == meta["tta_flip"]
    if record.backend == "onnx":  # exported from this very checkpoint, of the precision the record says
        onnx = read_onnx_metadata(record.inference_path)
        assert onnx["source_sha256"] == record.sha256(record.checkpoint), f"{name}: re-export its ONNX file"
        assert onnx["class_names"] == list(record.classes) and onnx["preprocessing"] == record.preprocessing
        assert ("int8" if onnx["weights"].startswith("int8") else "float32") == record.precision
        assert record.inference.endswith(".int8.onnx") == (record.precision == "int8")  # the name says it too
    for teacher in record.recipe.get("teachers", []):  # the recipe is pinned by the sha256 of what it learned from
        assert re.fullmatch(r"[0-9a-f]{64}", teacher["sha256"]), (name, teacher)
    for metric in record.metrics:  # measured on the inference file, the path users get
        assert metric["file"] == record.inference and metric["backend"] == record.backend, (name, metric)
        assert metric["role"] in ("validation", "test") and 0 < metric["accuracy"] <= 1
    assert record.licence and record.data_notes and record.title


def test_the_records_name_a_default_and_list_the_models():
    assert default_model() in RECORDS and list_models() == list(RECORDS) == expressnet.list_models()
    assert get_record() is get_record("default") is RECORDS[default_model()]
    assert set(shipped_models()) == set(RECORDS)
    assert resolve_model(None) == resolve_model(default_model()) == RECORDS[default_model()].checkpoint_path
    with pytest.raises(CheckpointError, match=r"not a shipped model.*shipped: "):
        get_record("no-such-model")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        resolve_model("no-such-model")
    total = sum(p.stat().st_size for p in WEIGHTS_DIR.iterdir() if p.is_file())  # weights, ONNX files, records
    # five 7.7 M-parameter models (int8 safetensors, about 7.8 MB each), two int8 ONNX files (8.3 MB each),
    # fer2013-fast's float32 weights and ONNX (2.5 MB each): the wheel's weights stay small
    assert total <= 60_000_000, f"shipped weights take {total / 1e6:.1f} MB (at most 60 MB)"


def test_the_backend_rule_is_fixed():
    for name, record in RECORDS.items():
        assert auto_backend(name) == record.backend  # the record's inference file on a CPU
        assert auto_backend(name, device="cuda") == "torch" and auto_backend(name, "cuda:1") == "torch"
        assert auto_backend(name, precision="bf16") == "torch"
    assert auto_backend(None) == RECORDS[default_model()].backend
    assert auto_backend("model.onnx") == "onnx" and auto_backend("run/best.safetensors") == "torch"


@pytest.mark.parametrize("name", [n for n, r in RECORDS.items() if r.backend == "onnx"])
def test_onnx_models_name_what_they_run(name):
    classifier = load_classifier(name)
    record = RECORDS[name]
    assert classifier.provenance() == {
        "name": name,
        "file": record.inference,
        "sha256": record.sha256()[:SHA_PREFIX],
        "backend": "onnx",
        "precision": record.precision,
    }


def test_a_damaged_inference_file_is_refused(tmp_path, monkeypatch):
    record = RECORDS[default_model()]
    if record.backend != "onnx":
        pytest.skip("the default model infers with torch")
    broken = tmp_path / record.inference
    data = bytearray(record.inference_path.read_bytes())
    data[len(data) // 2] ^= 1  # one bit of a weight: still a valid file, no longer the recorded one
    broken.write_bytes(bytes(data))
    monkeypatch.setattr("expressnet.hub.WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="installation is damaged"):
        load_classifier(None)


def test_models_command():
    runner = CliRunner()
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in RECORDS) and "(default)" in result.output
    result = runner.invoke(app, ["models", "--json"])
    shown = json.loads(result.stdout)
    assert [r["name"] for r in shown] == list(RECORDS) and shown[0]["files"] == RECORDS[shown[0]["name"]].files
    result = runner.invoke(app, ["models", default_model()])
    assert result.exit_code == 0 and RECORDS[default_model()].sha256() in result.output
    result = runner.invoke(app, ["models", "nope"])
    assert result.exit_code == 2 and "not a shipped model" in result.output
    table = runner.invoke(app, ["models", "--markdown"]).stdout
    assert table.strip() == markdown_table().strip() and table.count("\n") == len(RECORDS) + 2


def test_the_readme_models_table_is_the_records():
    """The README shows the table `expressnet models --markdown` prints, between its markers."""
    text = README.read_text()
    match = re.search(r"<!-- BEGIN models table[^>]*-->\n(.*?)\n<!-- END models table -->", text, re.S)
    if match is None:
        pytest.skip("README.md has no models-table markers")
    assert match.group(1).strip() == markdown_table().strip(), (
        "README.md's models table is not the records': paste `expressnet models --markdown` between its markers"
    )


@pytest.mark.parametrize("name", [None, "default", *RECORDS])
def test_load_model_offline(name, no_network):
    torch = pytest.importorskip("torch", reason="load_model returns a torch module: the torch extra")
    model = expressnet.load_model(name)
    meta = model.metadata
    assert not model.training
    key = default_model() if name in (None, "default") else name
    assert model.class_names == RECORDS[key].classes
    for field in ("class_names", "preprocessing", "train_config", "data", "metrics", "package_version"):
        assert field in meta, field
    pre = model.preprocessing
    x = torch.rand(2, pre.channels, pre.input_size, pre.input_size)
    with torch.no_grad():
        probs = model(x).softmax(1)
    assert probs.shape == (2, len(model.class_names))
    assert torch.allclose(probs.sum(1), torch.ones(2))


def test_unknown_model_names_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        expressnet.load_model(tmp_path / "nothing.safetensors")


@pytest.mark.parametrize("name", [n for n, r in RECORDS.items() if r.backend == "onnx"])
def test_the_inference_files_give_the_same_logits_whatever_the_threads_and_batches(name):
    """Determinism beyond the backend rule: ONNX Runtime's thread count and the batch a face lands in (chunks of
    a stream, the service's requests) do not change a single bit of the logits."""
    pre = RECORDS[name].preprocessing
    crops = np.random.default_rng(0).integers(0, 256, (96, pre["channels"], pre["input_size"], pre["input_size"]))
    crops = crops.astype(np.uint8)
    path = RECORDS[name].inference_path
    reference = OnnxClassifier(path, threads=1, batch_size=96).logits(crops)
    for threads, batch in ((2, 96), (None, 8), (2, 1)):
        assert np.array_equal(OnnxClassifier(path, threads=threads, batch_size=batch).logits(crops), reference)
