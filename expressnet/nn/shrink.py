"""Initialise a smaller ExpressNet-MoE from a larger trained one of the same topology (structured pruning).

Every channel space of the target (a branch conv's filters, a backbone stage's residual channels, a block's
inner channels, a dense layer's features) keeps the source's most important channels, in their original order:
importance is the BatchNorm |gamma| that scales the channel where there is one, else the L2 norm of the weights
that produce it (for an MoE's output, of the head weights that read it). Each backbone stage keeps its first
blocks (the later ones are residual, so dropping them leaves the identity); larger kernels keep their centre.
The result is a warm start for knowledge distillation (filter pruning, Li et al. 2017, "Pruning filters for
efficient ConvNets"), not a finished model: expect low accuracy before fine-tuning.
"""

from __future__ import annotations

import torch

from .backbones.resnet import ResNetSpec
from .expressnet import ExpressNetConfig, ExpressNetMoE

State = dict[str, torch.Tensor]


def _keep(scores: torch.Tensor, k: int, what: str) -> torch.Tensor:
    if k > len(scores):
        raise ValueError(f"cannot shrink {what}: the target has {k} channels, the source only {len(scores)}")
    return torch.topk(scores.float(), k).indices.sort().values


class _Shrinker:
    def __init__(self, source: State) -> None:
        self.src, self.out = source, {}

    def norm(self, key: str) -> torch.Tensor:
        """L2 norm of each output row of a weight."""
        return self.src[key].float().flatten(1).norm(dim=1)

    def gamma(self, prefix: str) -> torch.Tensor:
        return self.src[f"{prefix}.weight"].abs()

    def conv(self, prefix: str, out_idx: torch.Tensor, in_idx: torch.Tensor, kernel: int) -> None:
        w = self.src[f"{prefix}.weight"].index_select(0, out_idx).index_select(1, in_idx)
        crop = (w.shape[-1] - kernel) // 2
        if crop < 0:
            raise ValueError(f"cannot shrink {prefix}: target kernel {kernel} is larger than {w.shape[-1]}")
        self.out[f"{prefix}.weight"] = w[..., crop : crop + kernel, crop : crop + kernel].clone()
        if f"{prefix}.bias" in self.src:
            self.out[f"{prefix}.bias"] = self.src[f"{prefix}.bias"].index_select(0, out_idx).clone()

    def batchnorm(self, prefix: str, idx: torch.Tensor) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            self.out[f"{prefix}.{name}"] = self.src[f"{prefix}.{name}"].index_select(0, idx).clone()
        self.out[f"{prefix}.num_batches_tracked"] = self.src[f"{prefix}.num_batches_tracked"].clone()

    def linear(self, prefix: str, out_idx: torch.Tensor, in_idx: torch.Tensor) -> None:
        w = self.src[f"{prefix}.weight"]
        self.out[f"{prefix}.weight"] = w.index_select(0, out_idx).index_select(1, in_idx).clone()
        self.out[f"{prefix}.bias"] = self.src[f"{prefix}.bias"].index_select(0, out_idx).clone()

    def conv_stack(self, prefix: str, convs: tuple[tuple[int, int], ...], prev: torch.Tensor) -> torch.Tensor:
        for i, (filters, kernel) in enumerate(convs):
            idx = _keep(self.gamma(f"{prefix}.{i}.3"), filters, f"{prefix}.{i}")
            self.conv(f"{prefix}.{i}.0", idx, prev, kernel)
            self.batchnorm(f"{prefix}.{i}.3", idx)
            prev = idx
        return prev

    def moe(self, prefix: str, in_idx: torch.Tensor, out_idx: torch.Tensor, experts: int) -> None:
        for e in range(experts):
            self.linear(f"{prefix}.experts.{e}.fc", out_idx, in_idx)
        everyone = torch.arange(experts)
        for gate in ("gate", "noise"):
            if f"{prefix}.{gate}.weight" in self.src:
                self.linear(f"{prefix}.{gate}", everyone, in_idx)


def check_shrinkable(s: ExpressNetConfig, t: ExpressNetConfig) -> None:
    """``ValueError`` naming the part when ``s`` cannot shrink to ``t`` (they differ in more than widths, depths
    and kernel sizes, or the backbone is not a basic-block ResNet)."""
    if not (isinstance(s.backbone, ResNetSpec) and isinstance(t.backbone, ResNetSpec)):
        raise ValueError(
            f"cannot shrink: only ResNet backbones are supported (source {s.backbone}, target {t.backbone})"
        )
    same = {
        "input size": (s.input_size, t.input_size),
        "input channels": (s.in_channels, t.in_channels),
        "classes": (s.num_classes, t.num_classes),
        "global conv count": (len(s.global_convs), len(t.global_convs)),
        "local conv count": (len(s.local_convs), len(t.local_convs)),
        "backbone block": (s.backbone.block, t.backbone.block),
        "backbone stem": (s.backbone.stem, t.backbone.stem),
        "backbone stages": (len(s.backbone.layers), len(t.backbone.layers)),
        "experts": (s.num_experts, t.num_experts),
    }
    for what, (a, b) in same.items():
        if a != b:
            raise ValueError(f"cannot shrink: the {what} differs (source {a}, target {b})")
    if t.backbone.block != "basic":
        raise ValueError("cannot shrink: only basic-block backbones are supported")
    if any(b > a for a, b in zip(s.backbone.layers, t.backbone.layers)):
        raise ValueError(f"cannot shrink: target stages {t.backbone.layers} are deeper than {s.backbone.layers}")


def _shrink_backbone(k: _Shrinker, t: ExpressNetConfig, expected: State, image: torch.Tensor) -> torch.Tensor:
    """The stem, then the first blocks of each stage; the kept output channels of the last stage."""
    prev = _keep(k.gamma("backbone.bn1"), t.backbone.stem_width, "backbone stem")
    k.conv("backbone.conv1", prev, image, k.src["backbone.conv1.weight"].shape[-1])
    k.batchnorm("backbone.bn1", prev)
    for stage, (blocks, width) in enumerate(zip(t.backbone.layers, t.backbone.widths), start=1):
        name = f"backbone.layer{stage}"
        down = f"{name}.0.downsample"
        if f"{down}.0.weight" in expected:
            score = k.gamma(f"{name}.0.bn2") + (k.gamma(f"{down}.1") if f"{down}.1.weight" in k.src else 0)
            residual = _keep(score, width, name)
        else:  # an identity shortcut carries the stage input's channels through
            residual = prev
        for b in range(blocks):
            block = f"{name}.{b}"
            inner = _keep(k.gamma(f"{block}.bn1"), width, f"{block} inner channels")
            k.conv(f"{block}.conv1", inner, prev, 3)
            k.batchnorm(f"{block}.bn1", inner)
            k.conv(f"{block}.conv2", residual, inner, 3)
            k.batchnorm(f"{block}.bn2", residual)
            if f"{block}.downsample.0.weight" in expected:  # a source shortcut the target lacks is dropped
                if f"{block}.downsample.0.weight" not in k.src:
                    raise ValueError(
                        f"cannot shrink: the target's {block} needs a projection shortcut the source lacks"
                    )
                k.conv(f"{block}.downsample.0", residual, prev, 1)
                k.batchnorm(f"{block}.downsample.1", residual)
            prev = residual
    return prev


def shrink_state(source: State, source_cfg: ExpressNetConfig, target_cfg: ExpressNetConfig) -> State:
    """A state dict for ``ExpressNetMoE(target_cfg)`` made from ``source`` (weights of ``source_cfg``); raises
    ``ValueError`` naming the part when the two configs differ in more than widths, depths and kernel sizes."""
    s, t = source_cfg, target_cfg
    check_shrinkable(s, t)
    expected = ExpressNetMoE(t).state_dict()
    k = _Shrinker(source)
    image = torch.arange(t.in_channels)

    # global branch: convs, then the dense layer on the channels-last flattened map
    g = k.conv_stack("global_branch.convs", t.global_convs, image)
    side = s.input_size // 2 ** (len(s.global_convs) - 1)
    src_channels = s.global_convs[-1][0]
    flat = (torch.arange(side * side)[:, None] * src_channels + g[None, :]).flatten()
    global_dim = _keep(k.norm("global_branch.fc.weight"), t.global_dim, "global_branch.fc")
    k.linear("global_branch.fc", global_dim, flat)

    local = k.conv_stack("local_branch.convs", t.local_convs, image)
    prev = _shrink_backbone(k, t, expected, image)

    fusion_in = torch.cat([local, prev + s.local_convs[-1][0]])
    fusion = _keep(k.norm("fusion.fc.weight"), t.fusion_dim, "fusion.fc")
    k.linear("fusion.fc", fusion, fusion_in)

    head = k.src["head.weight"].float()
    global_out = _keep(head[:, : s.global_dim].norm(dim=0), t.global_dim, "moe_global output")
    fusion_out = _keep(head[:, s.global_dim :].norm(dim=0), t.fusion_dim, "moe_expression output")
    k.moe("moe_global", global_dim, global_out, t.num_experts)
    k.moe("moe_expression", fusion, fusion_out, t.num_experts)
    k.linear("head", torch.arange(t.num_classes), torch.cat([global_out, fusion_out + s.global_dim]))

    wrong = [key for key in expected if key not in k.out or k.out[key].shape != expected[key].shape]
    extra = sorted(set(k.out) - set(expected))
    if wrong or extra:
        raise ValueError(f"cannot shrink: the target's {(wrong or extra)[0]} has no counterpart of its shape")
    return k.out
