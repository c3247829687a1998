"""The core install (``pip install expressnet``, no torch): importing the package stays light, and the front door
(Recognizer, predict, summarize, the HTTP service) runs the shipped default model on ONNX Runtime. Each check
runs in a fresh interpreter where ``import torch`` fails, so it proves the same in the full development
environment as in CI's core-only one (``make test-core``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ASTRONAUT

import expressnet
import expressnet.hub

NO_TORCH = "import sys; sys.modules['torch'] = None\n"  # from here on, `import torch` raises ImportError


def run(code: str, *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH + code, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module", autouse=True)
def default_model_is_onnx():
    if expressnet.get_record().backend != "onnx":
        pytest.skip("the default model infers with torch")


def test_importing_the_package_imports_nothing_heavy():
    code = "import expressnet, expressnet.hub; expressnet.list_models(); dir(expressnet)"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    heavy = {"torch", "onnxruntime", "cv2", "numpy", "ai_edge_litert", "matplotlib", "pandas", "fastapi", "sklearn"}
    assert not imported & heavy, sorted(imported & heavy)


def test_recognizer_without_torch():
    code = (
        "import expressnet\n"
        "r = expressnet.Recognizer(detector_options={'threads': 1})\n"
        "faces = r.predict(sys.argv[1])\n"
        "print(len(faces), faces[0].emotion, r.provenance()['backend'], sys.modules.get('torch'))\n"
        "try:\n    expressnet.load_model()\nexcept ModuleNotFoundError as exc:\n    print('load_model:', exc)\n"
    )
    out = run(code, ASTRONAUT).stdout.splitlines()
    assert out[0] == "1 happy onnx None"
    assert "pip install 'expressnet[torch]'" in out[1]


def test_predict_and_summarize_without_torch(tmp_path):
    code = (
        "from expressnet.cli import main\n"
        "sys.argv = ['expressnet', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
    )
    table = run(code, "predict", ASTRONAUT, "--no-progress", "--threads", "1").stdout
    assert "happy" in table and "1 face(s)" in table
    rows = tmp_path / "rows.jsonl"
    run(code, "predict", ASTRONAUT, "--json", rows, "--threads", "1")
    (line,) = [json.loads(x) for x in rows.read_text().splitlines()]
    assert line["model"]["backend"] == "onnx" and line["faces"][0]["emotion"] == "happy"
    run(code, "summarize", rows, "--out", tmp_path / "summary")
    report = json.loads((tmp_path / "summary" / "summary.json").read_text())
    assert report["folders"] and report["classes"] == list(expressnet.get_record().classes)


def test_the_service_without_torch():
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    code = (
        "from fastapi.testclient import TestClient\n"
        "from expressnet.serve import Settings, create_app\n"
        "with TestClient(create_app(Settings())) as client:\n"
        "    data = open(sys.argv[1], 'rb').read()\n"
        "    r = client.post('/v1/faces', content=data, headers={'content-type': 'image/jpeg'})\n"
        "    print(r.status_code, r.json()['faces'][0]['emotion'], r.json()['model']['backend'])\n"
    )
    assert run(code, ASTRONAUT).stdout.split() == ["200", "happy", "onnx"]


def test_a_model_that_infers_with_torch_names_the_extra():
    torch_models = [name for name, record in expressnet.hub.records().items() if record.backend == "torch"]
    if not torch_models:
        pytest.skip("every shipped model infers with an ONNX file")
    code = (
        "import expressnet\n"
        "try:\n    expressnet.Recognizer(sys.argv[1], detector='none')\n"
        "except expressnet.hub.CheckpointError as exc:\n    print(exc)\n"
    )
    out = run(code, torch_models[0]).stdout
    assert f"model {torch_models[0]!r} infers with torch: pip install 'expressnet[torch]'" in out
