"""Residual backbone with torchvision-compatible parameter names (torchvision does not import on CPU torch here).

``ResNet`` is torchvision's ``ResNet`` without the classifier: it maps an image to globally average-pooled
features. Its state dict has exactly torchvision's keys minus ``fc.*``, so
``backbone.load_state_dict(torchvision_state_dict_without_fc)`` works strictly. A ``small`` stem (3x3,
stride 1, no max-pool) and custom widths/depths serve 48-64 px face crops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: the stride sits on the 3x3 convolution."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


STEMS = ("imagenet", "small", "small_pool")
BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


@dataclass(frozen=True)
class ResNetSpec:
    """Shape of a residual backbone. ``resnet50`` is ``ResNetSpec("bottleneck", (3, 4, 6, 3))``."""

    block: str = "bottleneck"
    layers: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    # "imagenet": 7x7/2 conv + 3x3/2 max-pool (1/4 resolution); "small": 3x3/1 conv (full resolution);
    # "small_pool": 3x3/1 conv + 2x2 max-pool (1/2 resolution)
    stem: str = "imagenet"
    stem_width: int = 64

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise ValueError(f"unknown block {self.block!r}; choose from {sorted(BLOCKS)}")
        if self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}; choose from {STEMS}")
        if len(self.layers) != len(self.widths):
            raise ValueError("layers and widths must have the same length")


class ResNet(nn.Module):
    """Residual feature extractor: image (N, C, H, W) -> pooled features (N, ``out_features``)."""

    def __init__(self, spec: ResNetSpec = ResNetSpec(), in_channels: int = 3) -> None:
        super().__init__()
        self.spec = spec
        block = BLOCKS[spec.block]
        if spec.stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, spec.stem_width, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(in_channels, spec.stem_width)
            self.maxpool = nn.MaxPool2d(2) if spec.stem == "small_pool" else nn.Identity()
        self.bn1 = nn.BatchNorm2d(spec.stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = spec.stem_width
        for i, (planes, blocks) in enumerate(zip(spec.widths, spec.layers)):
            self.add_module(f"layer{i + 1}", self._make_layer(block, planes, blocks, stride=1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_features = self.inplanes

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @property
    def stages(self) -> Sequence[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.spec.layers))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages:
            x = stage(x)
        return torch.flatten(self.avgpool(x), 1)


def residual_blocks(backbone: ResNet) -> dict[str, BasicBlock | Bottleneck]:
    """The backbone's blocks by state-dict prefix (``"layer4.1"``), in order."""
    return {name: m for name, m in backbone.named_modules() if isinstance(m, (BasicBlock, Bottleneck))}


def make_identity(block: BasicBlock | Bottleneck) -> None:
    """Zero the block's last BatchNorm, so that it returns ``relu(x)``, which is ``x`` on the non-negative inputs
    every block gets (the stem and each block end in a ReLU): a block added to a trained backbone this way
    leaves its function unchanged and then learns a residual (Goyal et al. 2017's zero-init residual, used to
    deepen a trained network as Net2DeeperNet does). ``ValueError`` for a block with a projection shortcut."""
    if block.downsample is not None:
        raise ValueError("a block with a projection shortcut cannot start as the identity")
    last = block.bn3 if isinstance(block, Bottleneck) else block.bn2
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()


def load_backbone_weights(backbone: nn.Module, source: str | Path | Mapping[str, torch.Tensor]) -> None:
    """Load a backbone's weights strictly, ignoring a classifier or descriptor layer (``fc.*``) and a
    ``backbone.`` prefix: torchvision-style ResNet weights, or a face backbone's converted file.

    ``source`` is a state dict or a file: ``.safetensors``, or a torch file loaded with ``weights_only=True``
    (never unpickled arbitrarily).
    """
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: backbone weights file not found")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # pickle errors, truncated files, ...
                raise ValueError(f"{path}: not a weights-only torch state dict ({exc})") from exc
            if isinstance(state, Mapping) and "state_dict" in state:
                state = state["state_dict"]
        if not isinstance(state, Mapping):
            raise ValueError(f"{source}: expected a state dict, found {type(state).__name__}")
    state = {
        k.removeprefix("backbone."): v for k, v in state.items() if not k.removeprefix("backbone.").startswith("fc.")
    }
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        where = "the given state dict" if isinstance(source, Mapping) else str(source)
        raise ValueError(f"{where}: these weights do not fit a {type(backbone).__name__} backbone ({exc})") from exc
