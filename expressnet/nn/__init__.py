"""Model library: ExpressNet-MoE, its building blocks and named presets."""

from .backbones.resnet import ResNet, ResNetSpec, load_backbone_weights
from .expressnet import (
    PRESETS,
    ExpressNetConfig,
    ExpressNetMoE,
    create_model,
    get_config,
    list_presets,
    register_preset,
)
from .fft_conv import SameConv2d, fft_conv2d_same
from .modes import eval_mode
from .moe import MixtureOfExperts, Routing, RoutingStats, routing_stats

__all__ = [
    "PRESETS",
    "ExpressNetConfig",
    "ExpressNetMoE",
    "MixtureOfExperts",
    "ResNet",
    "ResNetSpec",
    "Routing",
    "RoutingStats",
    "SameConv2d",
    "create_model",
    "eval_mode",
    "fft_conv2d_same",
    "get_config",
    "list_presets",
    "load_backbone_weights",
    "register_preset",
    "routing_stats",
]
