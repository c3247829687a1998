"""The runtime layer: Classifier backends (torch, ONNX Runtime) against each other, ONNX export and its
metadata, backend choice, thread safety, and the export/evaluate commands."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ASTRONAUT, make_fer_npz
from typer.testing import CliRunner

from expressnet import Recognizer
from expressnet.checkpoint import CheckpointError
from expressnet.cli import app
from expressnet.data.images import read_image
from expressnet.data.labels import FER2013_CLASSES
from expressnet.hub import INT8_KEEP_FLOAT, get_record, int8_keep_float, load_model, shipped_models, shipped_onnx
from expressnet.runtime import TorchClassifier, available_backends, load_classifier, predict_logits, softmax
from expressnet.runtime.onnx import KEEP_FLOAT, OnnxClassifier, export_onnx, file_sha256, read_onnx_metadata

pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed")


def crops(n: int, channels: int = 1, size: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, channels, size, size), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_onnx(tiny_checkpoint) -> Path:
    return export_onnx(load_model(tiny_checkpoint), tiny_checkpoint.with_suffix(".onnx"))


def test_onnx_equals_torch_and_carries_the_metadata(tiny_checkpoint, tiny_onnx):
    torch_c = load_classifier(tiny_checkpoint, "torch")
    onnx_c = load_classifier(tiny_onnx, "onnx")
    assert isinstance(onnx_c, OnnxClassifier) and onnx_c.backend == "onnx"
    for n in (1, 5, 70):  # dynamic batch, across classifier batches
        x = crops(n, seed=n)
        for flip in (False, True):
            diff = np.abs(torch_c.logits(x, flip) - onnx_c.logits(x, flip)).max()
            assert diff <= 1e-4, (n, flip, diff)
    meta = read_onnx_metadata(tiny_onnx)
    assert meta["class_names"] == list(FER2013_CLASSES) and meta["preprocessing"]["input_size"] == 48
    assert meta["tta_flip"] is True and onnx_c.tta_flip is True
    assert meta["temperature"] == 2.0 and meta["temperature_folded"] is True
    assert meta["source_sha256"] == file_sha256(tiny_checkpoint) and meta["weights"] == "float32"
    probabilities = onnx_c.probabilities(crops(4))
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-9)


@pytest.mark.parametrize("space_to_depth", [False, True])  # False: the caller's module itself is exported
def test_export_leaves_the_module_as_it_was(tiny_checkpoint, tmp_path, space_to_depth):
    # torch.onnx.export restores the mode of the module it is given; a wrapper built in training mode used to
    # switch the caller's model to training (dropout on, BatchNorm on batch statistics) after an export.
    x = torch.from_numpy(crops(8, seed=3)).float() / 255
    for training in (False, True):
        net = load_model(tiny_checkpoint).train(training)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        export_onnx(net, tmp_path / f"mode-{training}.onnx", space_to_depth=space_to_depth)
        assert net.training is training and all(m.training is training for m in net.modules())
        assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
        assert next(net.parameters()).dtype == torch.float32
        with torch.no_grad():
            assert torch.equal(net.eval()(x), load_model(tiny_checkpoint).eval()(x))
    net = load_model(tiny_checkpoint).eval().to(torch.bfloat16)
    target = export_onnx(net, tmp_path / "bf16.onnx", space_to_depth=space_to_depth)  # float32; the module: bf16
    assert next(net.parameters()).dtype == torch.bfloat16 and not net.training
    assert read_onnx_metadata(target)["weights"] == "float32"


def test_export_rewrites_the_first_unit_where_it_pays(tiny_checkpoint, tmp_path):
    # tiny's first global kernel is 17x17 on 48x48 gray: exported through the exact space-to-depth rewrite
    net = load_model(tiny_checkpoint)
    auto, plain = (
        export_onnx(net, tmp_path / "auto.onnx"),
        export_onnx(net, tmp_path / "plain.onnx", space_to_depth=False),
    )
    assert read_onnx_metadata(auto)["rewrites"] == ["space_to_depth_global_0", "norm_after_pool"]
    assert read_onnx_metadata(plain)["rewrites"] == ["norm_after_pool"]
    assert isinstance(net.global_branch.convs[0], torch.nn.Sequential)  # the module itself is not rewritten
    x = crops(40, seed=5)
    ref = TorchClassifier(net).logits(x)
    for path in (auto, plain):
        assert np.abs(OnnxClassifier(path).logits(x) - ref).max() <= 1e-4, path.name
    args = [
        "export",
        str(tiny_checkpoint),
        "--no-space-to-depth",
        "--no-norm-after-pool",
        "-o",
        str(tmp_path / "c.onnx"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert read_onnx_metadata(tmp_path / "c.onnx")["rewrites"] == []


def test_int8_export_is_small_and_close(tiny_checkpoint, tmp_path):
    net = load_model(tiny_checkpoint)
    calibration = crops(64, seed=1)
    target = export_onnx(net, tmp_path / "tiny.int8.onnx", int8=True, calibration=calibration)
    meta = read_onnx_metadata(target)
    assert meta["weights"].startswith("int8") and meta["keep_float"] == list(KEEP_FLOAT)
    ref = TorchClassifier(net).probabilities(crops(32, seed=2))
    got = OnnxClassifier(target).probabilities(crops(32, seed=2))
    assert np.abs(ref - got).max() < 0.1
    with pytest.raises(ValueError, match="calibration"):
        export_onnx(net, tmp_path / "x.onnx", int8=True)


def test_int8_export_keeps_the_named_layers_float(tiny_checkpoint, tmp_path):
    import onnx

    net = load_model(tiny_checkpoint)
    calibration = crops(64, seed=1)
    target = export_onnx(net, tmp_path / "q.onnx", int8=True, calibration=calibration, keep_float=("/model/head",))
    assert read_onnx_metadata(target)["keep_float"] == ["/model/head"]
    graph = onnx.load(str(target)).graph
    made_by = {out: node for node in graph.node for out in node.output}

    def weight_is_quantised(name: str) -> bool:
        node = next(n for n in graph.node if n.name.startswith(name) and n.op_type in ("Gemm", "MatMul", "Conv"))
        producer = made_by.get(node.input[1])
        return producer is not None and producer.op_type == "DequantizeLinear"

    assert not weight_is_quantised("/model/head")
    assert weight_is_quantised("/model/fusion/fc")
    # the convolutions that read the image stay float, the global one too, though it reads the image through
    # the space-to-depth rewrite's Reshape/Transpose
    assert read_onnx_metadata(target)["rewrites"] == ["space_to_depth_global_0", "norm_after_pool"]
    assert not weight_is_quantised("/model/global_branch/convs/convs.0/")
    assert not weight_is_quantised("/model/local_branch/convs/convs.0/")
    assert weight_is_quantised("/model/global_branch/convs/convs.1/")
    with pytest.raises(ValueError, match="/model/nothing"):
        export_onnx(net, tmp_path / "x.onnx", int8=True, calibration=calibration, keep_float=("/model/nothing",))


def test_shipped_models_own_float_layers_name_real_nodes(tmp_path):
    import onnx

    for name, prefixes in INT8_KEEP_FLOAT.items():
        names = [n.name for n in onnx.load(str(export_onnx(load_model(name), tmp_path / f"{name}.onnx"))).graph.node]
        for prefix in prefixes:  # an int8 export would raise on a prefix that names no node
            assert any(n.startswith(prefix) for n in names), (name, prefix)
    assert int8_keep_float("fer2013-fast") == INT8_KEEP_FLOAT["fer2013-fast"]
    assert int8_keep_float(None) is None and int8_keep_float("fer2013") is None  # the default KEEP_FLOAT
    assert int8_keep_float(load_model("fer2013-fast")) is None  # a module: no name to look up


def test_bad_onnx_files_are_named(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(CheckpointError, match=r"model\.onnx"):
        OnnxClassifier(bad)
    with pytest.raises(CheckpointError, match="not found"):
        OnnxClassifier(tmp_path / "missing.onnx")
    with pytest.raises(CheckpointError, match="backend 'onnx'"):
        load_classifier(bad, "torch")
    with pytest.raises(ValueError, match="expected uint8 crops"):
        TorchClassifier(load_model()).logits(np.zeros((2, 3, 48, 48), np.uint8))


def test_backend_choice(tiny_checkpoint, tiny_onnx):
    assert available_backends(tiny_checkpoint) == ["torch"]
    assert available_backends(tiny_onnx) == ["onnx"]
    assert load_classifier(tiny_checkpoint, "auto").backend == "torch"
    assert load_classifier(tiny_onnx, "auto").backend == "onnx"
    with pytest.raises(ValueError, match="unknown classifier backend 'tflite'"):
        load_classifier(tiny_checkpoint, "tflite")
    record = get_record()  # the default model: auto runs its record's inference file, never a timing race
    assert load_classifier(None, "auto").backend == record.backend
    assert set(available_backends(None)) == {"torch", record.backend}
    assert load_classifier(None, "torch").backend == "torch"  # torch stays a choice (and on a GPU: the rule)
    assert load_classifier(tiny_checkpoint, "auto", precision="bf16").precision == "bfloat16"


def test_a_checkpoint_on_the_onnx_backend_is_exported_once_into_the_cache(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("EXPRESSNET_CACHE", str(tmp_path / "cache"))
    first = load_classifier(tiny_checkpoint, "onnx")
    second = load_classifier(tiny_checkpoint, "onnx")
    assert first.source == second.source and Path(first.source).parent == tmp_path / "cache" / "onnx"
    x = crops(8)
    assert np.abs(first.logits(x) - load_classifier(tiny_checkpoint, "torch").logits(x)).max() <= 1e-4


def test_bf16_inference_agrees_with_fp32(tiny_checkpoint):
    net = load_model(tiny_checkpoint)
    x = crops(64, seed=3)
    fp32 = TorchClassifier(net).probabilities(x)
    bf16 = TorchClassifier(net, precision="bf16").probabilities(x)
    assert np.abs(fp32 - bf16).max() < 0.05
    with pytest.raises(ValueError, match="precision"):
        TorchClassifier(net, precision="int4")


def test_one_softmax_for_torch_and_numpy():
    logits = np.random.default_rng(0).normal(size=(5, 7)) * 30
    np.testing.assert_allclose(softmax(logits), torch.softmax(torch.from_numpy(logits), 1).numpy(), atol=1e-12)


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_one_recognizer_from_eight_threads_equals_sequential_calls(backend):
    """MoE modules record routing during forward and TFLite interpreters are not re-entrant: the Recognizer
    serialises what must be, so concurrent calls return exactly what sequential ones do."""
    recognizer = Recognizer(backend=backend, detector_options={"threads": 1})
    images = [str(ASTRONAUT), np.ascontiguousarray(read_image(ASTRONAUT)[::2, ::2])]
    expected = [[f.to_dict() for f in recognizer.predict(image, color="rgb")] for image in images]
    results: list = [None] * 48
    errors: list = []

    def work(i: int) -> None:
        try:
            results[i] = [f.to_dict() for f in recognizer.predict(images[i % 2], color="rgb")]
        except Exception as exc:  # collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=lambda k=k: [work(i) for i in range(k, 48, 8)]) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    for i, got in enumerate(results):
        assert got == expected[i % 2], i


def test_recognizer_backends_agree_on_a_photo(tiny_checkpoint, tiny_onnx):
    by_torch = Recognizer(tiny_checkpoint, backend="torch", detector_options={"threads": 1}).predict(ASTRONAUT)
    by_onnx = Recognizer(tiny_onnx, detector_options={"threads": 1}).predict(ASTRONAUT)
    assert [f.box for f in by_torch] == [f.box for f in by_onnx] and len(by_torch) == 1
    a, b = by_torch[0].probabilities, by_onnx[0].probabilities
    assert max(abs(a[c] - b[c]) for c in a) < 1e-5
    with pytest.raises(AttributeError, match="torch module"):
        Recognizer(tiny_onnx, detector="none").model  # noqa: B018


def test_a_module_passed_to_recognizer_goes_to_the_device(tiny_checkpoint):
    net = load_model(tiny_checkpoint)
    recognizer = Recognizer(net, "none", device="cpu")
    assert recognizer.model is net and next(recognizer.model.parameters()).device.type == "cpu"
    assert recognizer.classifier.backend == "torch"


def test_predict_logits_is_the_torch_path(tiny_checkpoint):
    net = load_model(tiny_checkpoint)
    x = crops(10)
    ref = predict_logits(net, torch.from_numpy(x), tta_flip=True).numpy()
    np.testing.assert_allclose(TorchClassifier(net).logits(x), ref, atol=1e-6)


def test_export_and_evaluate_commands(tiny_checkpoint, tmp_path):
    data = make_fer_npz(tmp_path / "fer.npz", {"Training": 70, "PublicTest": 35, "PrivateTest": 35})
    runner = CliRunner()
    out = tmp_path / "tiny.int8.onnx"
    args = ["export", str(tiny_checkpoint), "--int8", "--data", str(data), "--calibration-images", "50"]
    result = runner.invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "top-1 agreement" in result.output
    for model, backend in ((str(out), "onnx"), (str(tiny_checkpoint), "torch")):
        report = tmp_path / f"report-{backend}"
        args = ["evaluate", "--model", model, "--data", str(data), "--split", "PrivateTest", "--json", "-"]
        result = runner.invoke(app, [*args, "--report-dir", str(report)])
        assert result.exit_code == 0, result.output
        metrics = json.loads(result.output)
        assert metrics["backend"] == backend and metrics["n"] == 35 and 0 <= metrics["accuracy"] <= 1
        saved = json.loads((report / "metrics.json").read_text())
        assert saved["backend"] == backend and (report / "confusion.png").is_file()
        assert ("routing" in saved) == (backend == "torch")
    result = runner.invoke(app, ["export", "no-such-model"])
    assert result.exit_code == 2 and "no-such-model" in result.output


def test_export_refuses_to_replace_a_file_unless_told(tiny_checkpoint, tmp_path):
    runner = CliRunner()
    target = tmp_path / "mine.onnx"
    target.write_bytes(b"the user's own file")
    args = ["export", str(tiny_checkpoint), "--no-check", "-o", str(target)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and f"{target} exists; add --overwrite" in result.output
    assert target.read_bytes() == b"the user's own file"
    with pytest.raises(ValueError, match="exists; add --overwrite"):
        export_onnx(load_model(tiny_checkpoint), target)
    assert target.read_bytes() == b"the user's own file"
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert read_onnx_metadata(target)["class_names"] == list(FER2013_CLASSES)


def test_presets_and_model_summary_commands():
    runner = CliRunner()
    result = runner.invoke(app, ["presets"])
    assert result.exit_code == 0
    for name in ("paper", "compact", "compact-fast", "compact-xs", "tiny"):
        assert name in result.output
    result = runner.invoke(app, ["model-summary", "--preset", "compact"])
    assert result.exit_code == 0 and "decided at run time): none" in result.output
    result = runner.invoke(app, ["model-summary", "--preset", "compact-rgb64"])
    assert "21x21" in result.output  # a 21x21 kernel on a 64 px RGB map takes the FFT path


def test_shipped_onnx_files_come_from_the_shipped_weights():
    """Each shipped ONNX file names the sha256 of the safetensors file it was exported from: re-export it
    (`expressnet export NAME [--int8] -o expressnet/weights/FILE --overwrite`, hub.SHIPPED_ONNX) whenever the
    weights change."""
    for name, path in shipped_models().items():
        onnx_file = shipped_onnx(name)
        if onnx_file is None:
            continue
        meta = read_onnx_metadata(onnx_file)
        assert meta["source_sha256"] == file_sha256(path), name
        assert meta["class_names"] == list(load_model(name).class_names), name
        assert onnx_file.stat().st_size <= 10_000_000, name
        precision = "float32" if meta["weights"] == "float32" else "int8"  # as its name says (hub.shipped_onnx)
        assert shipped_onnx(name, precision) == onnx_file, name
        assert shipped_onnx(name, {"float32": "int8", "int8": "float32"}[precision]) is None, name
        x = crops(16, seed=4)
        reference, shipped = TorchClassifier(load_model(name)).logits(x), OnnxClassifier(onnx_file).logits(x)
        if meta["weights"] == "float32":
            assert np.abs(shipped - reference).max() <= 1e-4, name
        else:  # int8: the same top choice for nearly every crop (random crops; real ones: benchmarks/onnx_parity.py)
            assert (shipped.argmax(1) == reference.argmax(1)).mean() >= 0.8, name
