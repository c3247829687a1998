"""Read dlib's serialized face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) and convert it
to :class:`expressnet.nn.backbones.dlib_resnet.DlibResNet` plus its 128-d projection ``fc.weight``.

The file is ``serialize(net)`` of dlib's ``anet_type`` (``loss_metric<fc_no_bias<128, avg_pool_everything<...
con<32,7,7,2,2, input_rgb_image_sized<150>>>>>``). dlib writes a network from the loss down: the loss layer's
version and details, then each layer's version (an ``add_layer`` writes its version, then its whole
sub-network, then its own details; tags and skips only a version and their sub-network), so the file holds every
version number top-down, then the input layer and each layer's details bottom-up. The encodings (dlib's
``serialize.h``): an integer is a control byte (byte count, 0x80 = negative) and that many little-endian bytes;
a ``bool`` is the character '0' or '1'; a string is its length then its bytes; a float or double is an
integer mantissa (int64) and exponent (int16), value = mantissa * 2**exponent; a tensor is version 2, four
dimensions, then float32 little-endian values. A ``con_``'s parameters are its filters
(out, in, rows, cols) then its biases; an ``affine_``'s its per-channel gamma then beta; ``fc_``'s weights are
(inputs, outputs). The reader checks every layer's kind, size, stride and padding against :class:`DlibResNet`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..nn.backbones.dlib_resnet import MEAN_RGB, UNITS, DlibResNet
from .tfjs import ConversionError

INPUT_SIZE = 150
DESCRIPTOR = 128
FEATURES = 256


def network_layers() -> list[tuple]:
    """dlib's layers of the face-recognition ResNet, input side first: (kind, *expected, state-dict prefix)."""
    layers: list[tuple] = [("con", 32, 7, 2, "conv1"), ("affine", "bn1"), ("relu",), ("max_pool", 3, 2)]
    for i, (filters, down) in enumerate(UNITS):
        unit = f"units.{i}."
        layers += [("tag",), ("con", filters, 3, 2 if down else 1, unit + "conv1"), ("affine", unit + "bn1")]
        layers += [("relu",), ("con", filters, 3, 1, unit + "conv2"), ("affine", unit + "bn2")]
        if down:  # residual_down: add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<..., tag1<x>>>>>>
            layers += [("tag",), ("skip",), ("avg_pool", 2, 2)]
        layers += [("add_prev",), ("relu",)]
    layers += [("avg_pool", 0, 1), ("fc", DESCRIPTOR, FEATURES, "fc")]  # avg_pool_everything, fc_no_bias
    return layers


class Reader:
    """dlib's serialization primitives over the bytes of one file; every failure names the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = path.read_bytes()
        except OSError as exc:
            raise ConversionError(f"{path}: cannot read ({exc})") from exc
        self.pos = 0

    def fail(self, what: str) -> ConversionError:
        return ConversionError(
            f"{self.path}: not dlib's dlib_face_recognition_resnet_model_v1.dat ({what} at byte {self.pos}); "
            "use the file from face-recognition-models 0.3.0 or dlib.net"
        )

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"the file ends early (needs {n} more bytes)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def integer(self, signed: bool = True) -> int:
        control = self.take(1)[0]
        size = control & (0x0F if signed else 0x8F)
        if size == 0 or size > 8:
            raise self.fail(f"bad integer control byte {control:#x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if signed and control & 0x80 else value

    def version(self, allowed: range, what: str) -> int:
        value = self.integer()
        if value not in allowed:
            raise self.fail(f"{what} version {value}, expected {list(allowed)}")
        return value

    def boolean(self) -> bool:
        ch = self.take(1)
        if ch not in (b"0", b"1"):
            raise self.fail(f"bad bool {ch!r}")
        return ch == b"1"

    def real(self) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.fail("a float in dlib's old text format")
        mantissa, exponent = self.integer(), self.integer()
        if exponent >= 32000:  # dlib's codes for inf, -inf and nan
            return (math.inf, -math.inf, math.nan)[min(exponent - 32000, 2)]
        return math.ldexp(mantissa, exponent)

    def string(self) -> str:
        return self.take(self.integer(signed=False)).decode("latin-1")

    def name(self, *allowed: str) -> str:
        value = self.string()
        if value not in allowed:
            raise self.fail(f"layer {value!r}, expected {' or '.join(allowed)}")
        return value

    def tensor(self) -> np.ndarray:
        self.version(range(2, 3), "tensor")
        shape = tuple(self.integer() for _ in range(4))
        if min(shape) < 0:
            raise self.fail(f"tensor of shape {shape}")
        count = math.prod(shape)
        return np.frombuffer(self.take(4 * count), "<f4").reshape(shape).astype(np.float32)

    def alias_tensor(self) -> tuple[int, ...]:
        self.version(range(1, 2), "alias_tensor")
        return tuple(self.integer() for _ in range(4))

    def expect(self, got: object, wanted: object, what: str) -> None:
        if got != wanted:
            raise self.fail(f"{what} {got}, expected {wanted}")


def _input_layer(r: Reader) -> None:
    r.name("input_rgb_image_sized")
    means = tuple(np.float32(r.real()) for _ in range(3))
    r.expect(means, tuple(np.float32(m) for m in MEAN_RGB), "input channel means")
    r.expect((r.integer(signed=False), r.integer(signed=False)), (INPUT_SIZE, INPUT_SIZE), "input size")


def _con(r: Reader, filters: int, size: int, stride: int, key: str, state: dict[str, np.ndarray]) -> None:
    version = r.name("con_4", "con_5", "con_6")
    params = r.tensor()
    geometry = [r.integer() for _ in range(7)]  # filters, rows, cols, stride y/x, padding y/x
    padding = size // 2 if stride == 1 else 0
    r.expect(geometry, [filters, size, size, stride, stride, padding, padding], f"{key}: con geometry")
    shape, bias_shape = r.alias_tensor(), r.alias_tensor()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.real()
    use_bias = r.boolean() if version != "con_4" else True
    if version == "con_6" and r.boolean():
        raise r.fail(f"{key}: a con_ with a fused relu")
    r.expect((shape[0], shape[2], shape[3]), (filters, size, size), f"{key}: filter shape")
    weights = math.prod(shape)
    r.expect(params.size, weights + (filters if use_bias else 0), f"{key}: parameter count")
    if use_bias:
        r.expect(bias_shape[1], filters, f"{key}: bias shape")
    flat = params.reshape(-1)
    state[key + ".weight"] = flat[:weights].reshape(shape)
    state[key + ".bias"] = flat[weights:] if use_bias else np.zeros(filters, np.float32)


def _affine(r: Reader, key: str, state: dict[str, np.ndarray]) -> None:
    version = r.name("affine_", "affine_2")  # (a file saved during training would hold bn_con2 instead)
    params = r.tensor().reshape(-1)
    gamma, beta = r.alias_tensor(), r.alias_tensor()
    channels = math.prod(gamma)
    r.expect((params.size, math.prod(beta)), (2 * channels, channels), f"{key}: affine parameter count")
    r.expect(r.integer(), 0, f"{key}: affine mode (0 = per channel)")
    if version == "affine_2" and r.boolean():
        raise r.fail(f"{key}: a disabled affine layer")
    state[key + ".weight"], state[key + ".bias"] = params[:channels], params[channels:]


def _pool(r: Reader, kind: str, size: int, stride: int) -> None:
    r.name(kind + "_2")
    geometry = [r.integer() for _ in range(6)]  # rows, cols, stride y/x, padding y/x
    r.expect(geometry, [size, size, stride, stride, 0, 0], f"{kind} geometry")


def _fc(r: Reader, outputs: int, inputs: int, key: str, state: dict[str, np.ndarray]) -> None:
    version = r.name("fc_2", "fc_3")
    r.expect((r.integer(signed=False), r.integer(signed=False)), (outputs, inputs), "fc outputs and inputs")
    params = r.tensor()
    shape, _ = r.alias_tensor(), r.alias_tensor()
    r.expect(r.integer(), 1, "fc bias mode (1 = no bias)")
    for _ in range(4):
        r.real()
    if version == "fc_3":
        r.boolean()
    r.expect((shape[:2], params.size), ((inputs, outputs), inputs * outputs), "fc weights")
    state[key + ".weight"] = np.ascontiguousarray(params.reshape(inputs, outputs).T)


def _details(r: Reader, layer: tuple, state: dict[str, np.ndarray]) -> None:
    kind = layer[0]
    if kind == "con":
        _con(r, *layer[1:], state)
    elif kind == "affine":
        _affine(r, layer[1], state)
    elif kind == "relu":
        if r.name("relu_", "relu_2") == "relu_2" and r.boolean():
            raise r.fail("a disabled relu layer")
    elif kind in ("max_pool", "avg_pool"):
        _pool(r, kind, *layer[1:])
    elif kind == "add_prev":
        r.name("add_prev_")
    else:
        _fc(r, *layer[1:], state)


def dlib_resnet_state(path: str | Path) -> dict[str, torch.Tensor]:
    """``dlib_face_recognition_resnet_model_v1.dat`` -> ``DlibResNet().state_dict()`` plus ``fc.weight``
    (128 x 256: the face descriptor is ``fc.weight @ features``). :class:`ConversionError` naming the file on
    anything that is not exactly that network."""
    r = Reader(Path(path))
    r.version(range(1, 2), "add_loss_layer")
    if r.name("loss_metric_", "loss_metric_2") == "loss_metric_2":
        for _ in range(2):  # margin and distance threshold
            r.real()
    layers = network_layers()
    versions = []
    for i, layer in enumerate(reversed(layers)):  # versions top-down
        bottom = i == len(layers) - 1
        if layer[0] in ("tag", "skip"):
            versions.append(r.version(range(1, 2), layer[0]))
        else:
            versions.append(r.version(range(2, 4) if bottom else range(1, 3), f"{layer[0]} layer"))
    versions.reverse()
    state: dict[str, np.ndarray] = {}
    for i, (layer, version) in enumerate(zip(layers, versions)):  # details bottom-up
        if layer[0] in ("tag", "skip"):
            continue
        if i == 0:
            _input_layer(r)
        _details(r, layer, state)
        for _ in range(3):  # setup called, gradient stale, output disabled
            r.boolean()
        for _ in range(2):  # x_grad, cached output
            r.tensor()
        if i == 0:
            r.tensor()  # grad_final
            if version >= 3:
                r.integer()  # sample expansion factor
        elif version >= 2:
            r.tensor()  # params_grad
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} bytes after the network")
    shapes = {k: tuple(v.shape) for k, v in DlibResNet().state_dict().items()} | {"fc.weight": (DESCRIPTOR, FEATURES)}
    for key, shape in shapes.items():
        r.expect(state[key].shape, shape, f"{key}: shape")
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
