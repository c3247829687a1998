"""ExpressNet-MoE: multi-scale CNN feature extractors + residual backbone + mixture of experts.

Data flow (paper.md, arXiv 2510.13493)::

    image -> global branch (large kernels) -> Dense -> MoE_A ----------------------.
          -> local branch (small kernels) -> GAP --.                                 concat -> Dense(num_classes)
          -> residual backbone -> GAP -> Dropout --+-> concat -> Dense -> MoE_B ----'

The model takes float images in [0, 1] of shape (N, C, S, S) and returns logits. Routing decisions of
both MoE blocks from the last forward pass are in ``model.routing`` (or ``forward(x, return_routing=True)``);
``model.aux_loss()`` is the sum of their optional auxiliary losses for the trainer to add.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, overload

import torch
from torch import nn

from ..config import config_from_dict
from ..registry import Registry
from .backbones import create_backbone
from .backbones.resnet import ResNetSpec, load_backbone_weights
from .fft_conv import SameConv2d
from .moe import MixtureOfExperts, Routing


@dataclass(frozen=True)
class ExpressNetConfig:
    """Everything that defines an ExpressNet-MoE network. Branch convs are (filters, kernel) pairs."""

    num_classes: int = 7
    in_channels: int = 3
    input_size: int = 224
    # the global and local branches see the input average-pooled to this size (a divisor of input_size); None:
    # the input itself, as the paper. Lets a pretrained backbone read a large crop while the large-kernel
    # branches stay affordable on a CPU.
    branch_size: int | None = None
    global_convs: tuple[tuple[int, int], ...] = ((8, 75), (16, 50), (32, 25), (64, 15), (128, 9), (256, 3))
    global_dim: int = 512
    local_convs: tuple[tuple[int, int], ...] = ((16, 15), (32, 7), (64, 5), (128, 3), (256, 3))
    # a ResNetSpec, or a registered backbone's name (nn.backbones: "hse-faceres", "dlib-resnet29", "resnet50", ...)
    backbone: ResNetSpec | str = field(default_factory=ResNetSpec)
    fusion_dim: int = 512
    conv_dropout: float = 0.1
    feature_dropout: float = 0.5
    num_experts: int = 4
    top_k: int = 2
    moe_renormalize: bool = False
    noisy_gating: bool = False
    balance_loss_weight: float = 0.0
    z_loss_weight: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model config") -> ExpressNetConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error, except :data:`LEGACY_KEYS`."""
        return config_from_dict(cls, {k: v for k, v in data.items() if k not in LEGACY_KEYS}, where)


# Keys that older checkpoints store and that no longer mean anything: the FFT choice is made at run time.
LEGACY_KEYS = ("fft_min_kernel",)


class ConvUnit(nn.Sequential):
    """The paper's unit: 'same' conv + ReLU -> Dropout -> BatchNorm [-> MaxPool(2)]."""

    def __init__(self, cin: int, cout: int, kernel: int, dropout: float, pool: bool):
        layers: list[nn.Module] = [
            SameConv2d(cin, cout, kernel),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.BatchNorm2d(cout),
        ]
        if pool:
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)


def conv_stack(cin: int, convs: tuple[tuple[int, int], ...], dropout: float) -> nn.Sequential:
    """Conv units with a 2x2 max-pool after every one but the last."""
    units = []
    for i, (filters, kernel) in enumerate(convs):
        units.append(ConvUnit(cin, filters, kernel, dropout, pool=i < len(convs) - 1))
        cin = filters
    return nn.Sequential(*units)


class GlobalBranch(nn.Module):
    """CNN feature extractor 1: large kernels, then Flatten -> Dense -> ReLU -> Dropout."""

    def __init__(self, cfg: ExpressNetConfig) -> None:
        super().__init__()
        self.convs = conv_stack(cfg.in_channels, cfg.global_convs, cfg.conv_dropout)
        side = cfg.input_size // 2 ** (len(cfg.global_convs) - 1)
        if side < 1:
            raise ValueError(f"input size {cfg.input_size} is too small for {len(cfg.global_convs)} pooled convs")
        self.flat_features = side * side * cfg.global_convs[-1][0]
        self.fc = nn.Linear(self.flat_features, cfg.global_dim)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(cfg.feature_dropout)
        self.out_features = cfg.global_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last flatten order (H, W, C) as Keras' Flatten, so Keras weights map one to one.
        x = self.convs(x).permute(0, 2, 3, 1).flatten(1)
        return self.dropout(self.relu(self.fc(x)))


class LocalBranch(nn.Module):
    """CNN feature extractor 2: small kernels, then global average pooling."""

    def __init__(self, cfg: ExpressNetConfig) -> None:
        super().__init__()
        self.convs = conv_stack(cfg.in_channels, cfg.local_convs, cfg.conv_dropout)
        self.out_features = cfg.local_convs[-1][0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x).mean(dim=(2, 3))


class Fusion(nn.Module):
    """concat(local, backbone) -> Dense -> ReLU -> Dropout: the 'expression features'."""

    def __init__(self, in_features: int, out_features: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, local: torch.Tensor, backbone: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.relu(self.fc(torch.cat([local, backbone], dim=1))))


class ExpressNetMoE(nn.Module):
    """ExpressNet-MoE; build through :func:`expressnet.create_model`."""

    def __init__(self, cfg: ExpressNetConfig) -> None:
        super().__init__()
        self.config = cfg
        branch_size = cfg.branch_size or cfg.input_size
        if cfg.input_size % branch_size:
            raise ValueError(f"branch_size {branch_size} must divide input_size {cfg.input_size}")
        self.branch_pool = cfg.input_size // branch_size
        self.global_branch = GlobalBranch(replace(cfg, input_size=branch_size))
        self.local_branch = LocalBranch(cfg)
        self.backbone = create_backbone(cfg.backbone, cfg.in_channels)
        self.backbone_dropout = nn.Dropout(cfg.feature_dropout)
        self.fusion = Fusion(
            self.local_branch.out_features + self.backbone.out_features, cfg.fusion_dim, cfg.feature_dropout
        )
        moe_kwargs = dict(
            num_experts=cfg.num_experts,
            top_k=cfg.top_k,
            renormalize=cfg.moe_renormalize,
            noisy_gating=cfg.noisy_gating,
            balance_loss_weight=cfg.balance_loss_weight,
            z_loss_weight=cfg.z_loss_weight,
        )
        self.moe_global = MixtureOfExperts(cfg.global_dim, **moe_kwargs)
        self.moe_expression = MixtureOfExperts(cfg.fusion_dim, **moe_kwargs)
        self.head = nn.Linear(cfg.global_dim + cfg.fusion_dim, cfg.num_classes)

    @property
    def moe_blocks(self) -> dict[str, MixtureOfExperts]:
        return {"global": self.moe_global, "expression": self.moe_expression}

    @property
    def routing(self) -> dict[str, Routing]:
        """Routing of both MoE blocks in the last forward pass."""
        return {name: moe.last_routing for name, moe in self.moe_blocks.items() if moe.last_routing is not None}

    def aux_loss(self) -> torch.Tensor:
        """Sum of the MoE auxiliary losses of the last forward pass (0 unless enabled in the config)."""
        return sum((r.aux_loss for r in self.routing.values()), torch.zeros(()))

    @overload
    def forward(self, x: torch.Tensor, return_routing: Literal[False] = False) -> torch.Tensor: ...

    @overload
    def forward(self, x: torch.Tensor, return_routing: Literal[True]) -> tuple[torch.Tensor, dict[str, Routing]]: ...

    def forward(self, x: torch.Tensor, return_routing: bool = False) -> torch.Tensor | tuple[torch.Tensor, dict]:
        small = x if self.branch_pool == 1 else nn.functional.avg_pool2d(x, self.branch_pool)
        g = self.global_branch(small)
        expression = self.fusion(self.local_branch(small), self.backbone_dropout(self.backbone(x)))
        logits = self.head(torch.cat([self.moe_global(g), self.moe_expression(expression)], dim=1))
        return (logits, self.routing) if return_routing else logits


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    config: ExpressNetConfig


PRESETS: Registry[Preset] = Registry("preset")


def register_preset(name: str, description: str, config: ExpressNetConfig) -> None:
    PRESETS.register(name, Preset(name, description, config))


def list_presets() -> list[str]:
    return PRESETS.names()


def get_config(preset: str, num_classes: int = 7, **overrides: Any) -> ExpressNetConfig:
    """The config of a named preset with ``num_classes`` and any field overridden (``ValueError`` for an
    unknown preset, listing the known ones)."""
    cfg = replace(PRESETS.get(preset).config, num_classes=num_classes)
    if not overrides:
        return cfg
    merged = cfg.to_dict()
    for key, value in overrides.items():
        if (
            key == "backbone" and isinstance(value, dict) and isinstance(merged["backbone"], dict)
        ):  # partial: keep the rest
            value = {**merged["backbone"], **value}
        merged[key] = value
    return ExpressNetConfig.from_dict(merged)


def create_model(
    preset: str = "compact", num_classes: int = 7, backbone_weights: Any = None, **overrides: Any
) -> ExpressNetMoE:
    """Build a named preset (default ``compact``, as training; ``create_model("paper")`` is the paper's network);
    ``overrides`` replace config fields (e.g. ``top_k=1``, ``input_size=112``).

    ``backbone_weights`` (a file or state dict: torchvision ResNet names, or a face backbone's converted file from
    :func:`expressnet.pretrained.backbone_weights`) initialises the residual backbone.
    """
    model = ExpressNetMoE(get_config(preset, num_classes, **overrides))
    if backbone_weights is not None:
        load_backbone_weights(model.backbone, backbone_weights)
    return model


def scaled_kernels(paper_kernels: tuple[int, ...], input_size: int) -> tuple[int, ...]:
    """Kernels covering the same fraction of their feature map as the paper's do at 224 px (nearest odd, >= 3)."""
    return tuple(max(3, 2 * round((k * input_size / 224 - 1) / 2) + 1) for k in paper_kernels)


PAPER = ExpressNetConfig()
register_preset(
    "paper",
    "ExpressNet-MoE exactly as in the paper: 224x224 RGB in [0,1], global branch 75/50/25/15/9/3 kernels, "
    "local branch 15/7/5/3/3, ResNet-50, fusion 512, two 4-expert top-2 MoE blocks "
    "(35,876,751 parameters for 7 classes).",
    PAPER,
)


# Compact presets: the paper's topology for 48-64 px face crops. The global branch keeps the paper's first
# four large-kernel layers with kernels scaled to the same fraction of each feature map (17/11/5/3 at 48 px);
# the local branch keeps small kernels; the residual backbone is ResNet-18-shaped with a 3x3 stem for small
# inputs. Conv dropout is off (measured: it costs ~25 % of training speed, and BatchNorm follows anyway).
def compact_config(
    input_size: int = 48,
    in_channels: int = 1,
    widths: tuple[int, ...] = (48, 96, 192, 384),
    layers: tuple[int, ...] = (2, 2, 2, 2),
    stem: str = "small_pool",
    dim: int = 256,
) -> ExpressNetConfig:
    """The paper's topology sized for small face crops (48-64 px, gray or RGB)."""
    global_kernels = scaled_kernels(tuple(k for _, k in PAPER.global_convs[:4]), input_size)
    return ExpressNetConfig(
        in_channels=in_channels,
        input_size=input_size,
        global_convs=tuple(zip((8, 16, 32, 64), global_kernels)),
        global_dim=dim,
        local_convs=((32, 5), (64, 3), (128, 3)),
        backbone=ResNetSpec("basic", layers, widths, stem, stem_width=32),
        fusion_dim=dim,
        conv_dropout=0.0,
        feature_dropout=0.3,
    )


register_preset(
    "compact",
    "The shipped default: paper topology for 48x48 gray face crops; global kernels 17/11/5/3, local 5/3/3, "
    "ResNet-18-shaped basic-block backbone (widths 48-384), 256-d fusion and MoE (about 7.7 M parameters).",
    compact_config(),
)
register_preset(
    "compact-rgb64",
    "compact for 64x64 RGB face crops (global kernels 21/15/7/5).",
    compact_config(input_size=64, in_channels=3),
)
register_preset(
    "compact-s",
    "Smallest, fastest variant for 48x48 gray: one basic block per stage (widths 32-256, full-resolution "
    "stem), about 2.6 M parameters.",
    compact_config(widths=(32, 64, 128, 256), layers=(1, 1, 1, 1), stem="small"),
)
register_preset(
    "compact-fast",
    "First distillation student (48x48 gray): the paper's topology with narrow branches (global kernels "
    "17/11/5/3, 6-48 filters), one basic block per stage (widths 24-192), 128-d fusion and MoE (about 1.1 M "
    "parameters, ~38 M multiply-accumulates); ~1,500 faces/s int8 in ONNX Runtime on 2 threads: see compact-xs.",
    ExpressNetConfig(
        in_channels=1,
        input_size=48,
        global_convs=((6, 17), (12, 11), (24, 5), (48, 3)),
        global_dim=128,
        local_convs=((16, 5), (32, 3), (64, 3)),
        backbone=ResNetSpec("basic", (1, 1, 1, 1), (24, 48, 96, 192), "small_pool", stem_width=24),
        fusion_dim=128,
        conv_dropout=0.0,
        feature_dropout=0.2,
    ),
)
register_preset(
    "compact-xs",
    "Distillation student sized for >= 3,000 faces/s through ONNX Runtime on 2 CPU threads (48x48 gray): the "
    "paper's topology with smaller global kernels 9/7/5/3 (the 17x17 conv alone costs ~9 ms per 64 faces there), "
    "4-32 global and 8-32 local filters, one basic block per stage (widths 16-128, stem 12), 128-d fusion and MoE "
    "(~13 M multiply-accumulates); initialised from a trained compact model by nn.shrink.",
    ExpressNetConfig(
        in_channels=1,
        input_size=48,
        global_convs=((4, 9), (8, 7), (16, 5), (32, 3)),
        global_dim=128,
        local_convs=((8, 5), (16, 3), (32, 3)),
        backbone=ResNetSpec("basic", (1, 1, 1, 1), (16, 32, 64, 128), "small_pool", stem_width=12),
        fusion_dim=128,
        conv_dropout=0.0,
        feature_dropout=0.2,
    ),
)


# Face presets: the paper's topology around a face-pretrained backbone (nn.backbones), colour input. The backbone
# reads the whole crop at input_size; the global and local branches read it average-pooled to half that size,
# with the compact rule for global kernels (the paper's 75/50/25/15 scaled to the branch's input) and a narrow
# local branch. Measured (batch 64, 2 threads, bf16 autocast, one run): face-hse112 ~90-128 training images/s,
# against ~75 with the compact local branch (32-128 filters) and ~35 with the branches at the full 112 px.
def face_config(backbone: str, input_size: int, branch_size: int, dim: int = 256) -> ExpressNetConfig:
    """The paper's topology around a pretrained face backbone, sized for a CPU."""
    global_kernels = scaled_kernels(tuple(k for _, k in PAPER.global_convs[:4]), branch_size)
    return ExpressNetConfig(
        in_channels=3,
        input_size=input_size,
        branch_size=branch_size,
        global_convs=tuple(zip((8, 16, 32, 64), global_kernels)),
        global_dim=dim,
        local_convs=((16, 5), (32, 3), (64, 3)),
        backbone=backbone,
        fusion_dim=dim,
        conv_dropout=0.0,
        feature_dropout=0.3,
    )


# face-hse168 and face-hse224 read 168 and 224 px with their branches at 56 px, as face-hse112's: every weight of a
# face-hse112 model fits them.
_FACE_PRESETS = (("hse", 112, 56), ("hse", 96, 48), ("hse", 168, 56), ("hse", 224, 56), ("dlib", 150, 50))
for _backbone, _size, _branch in _FACE_PRESETS:
    _name = {"hse": "hse-faceres", "dlib": "dlib-resnet29"}[_backbone]
    register_preset(
        f"face-{_backbone}{_size}",
        f"{_size}x{_size} RGB around the {_name} backbone (train with backbone_weights: pretrained); branches at "
        f"{_branch} px, global kernels {'/'.join(str(k) for _, k in face_config(_name, _size, _branch).global_convs)}, "
        "local 16-64 filters, 256-d fusion and MoE.",
        face_config(_name, _size, _branch),
    )

register_preset(
    "tiny",
    "A few thousand parameters with the full topology, for tests and smoke runs (48x48 gray); not for real use.",
    ExpressNetConfig(
        in_channels=1,
        input_size=48,
        global_convs=((4, 17), (8, 11), (8, 3)),
        global_dim=32,
        local_convs=((8, 5), (16, 3)),
        backbone=ResNetSpec("basic", (1, 1), (8, 16), "small_pool", stem_width=8),
        fusion_dim=32,
        conv_dropout=0.0,
        feature_dropout=0.1,
    ),
)
