"""The residual backbone has torchvision's ResNet state-dict keys (minus fc) and loads weights safely.

``fixtures/torchvision_resnet_keys.json`` holds the state-dict keys and shapes of torchvision 0.28.0's
``resnet50()`` and ``resnet18()``, generated from torchvision's own ``models/resnet.py``.
"""

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from expressnet.nn import ResNet, ResNetSpec, create_model, load_backbone_weights
from expressnet.nn.backbones import create_backbone

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "torchvision_resnet_keys.json").read_text())


def torchvision_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in FIXTURE[name].items():
        state[key] = (
            torch.randint(0, 5, shape, generator=g)
            if key.endswith("num_batches_tracked")
            else torch.randn(shape, generator=g)
        )
    return state


@pytest.mark.parametrize(
    ("name", "spec"), [("resnet50", ResNetSpec()), ("resnet18", ResNetSpec("basic", (2, 2, 2, 2)))]
)
def test_keys_and_shapes_equal_torchvision_minus_fc(name, spec):
    ours = {k: list(v.shape) for k, v in ResNet(spec).state_dict().items()}
    theirs = {k: v for k, v in FIXTURE[name].items() if not k.startswith("fc.")}
    assert ours == theirs


def test_paper_backbone_loads_torchvision_state_dict_strictly():
    model = create_model("paper")
    state = torchvision_state("resnet50")
    model.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=True)
    assert torch.equal(model.backbone.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])


def test_load_backbone_weights_from_files(tmp_path):
    state = torchvision_state("resnet50", seed=1)
    st = tmp_path / "r50.safetensors"
    save_file(state, str(st))
    pt = tmp_path / "r50.pth"
    torch.save(state, pt)
    for path in (st, pt):
        model = create_model("paper", backbone_weights=path)
        assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])


def test_backbone_weights_errors(tmp_path):
    backbone = ResNet()
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        load_backbone_weights(backbone, tmp_path / "missing.pth")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"conv1.weight": Evil()}))
    with pytest.raises(ValueError, match=r"evil\.pth"):
        load_backbone_weights(backbone, evil)
    wrong = {k: v for k, v in torchvision_state("resnet18").items()}
    with pytest.raises(ValueError, match="do not fit a ResNet backbone"):
        load_backbone_weights(backbone, wrong)  # a ResNet-18 does not fit a ResNet-50 strictly


@pytest.mark.parametrize(("name", "size"), [("hse-faceres", 112), ("hse-faceres", 97), ("dlib-resnet29", 151)])
def test_face_backbones_export_to_onnx_exactly(name, size, tmp_path):
    """TensorFlow's 'SAME' padding of MobileNetV1 and dlib's zero-padded sums survive an ONNX export at even and odd
    input sizes (an export traces the padding arithmetic as ONNX integer ops, where division truncates)."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    backbone = create_backbone(name).eval()
    x = torch.rand(2, 3, size, size)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(backbone, x[:1], path, input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        ref = backbone(x).numpy()
    assert out.shape == ref.shape and abs(out - ref).max() <= 1e-4 * max(1.0, abs(ref).max())
