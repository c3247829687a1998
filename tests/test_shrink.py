"""nn.shrink: a smaller model of the same topology initialised from a larger one."""

import pytest
import torch

from expressnet.nn import create_model, get_config
from expressnet.nn.shrink import shrink_state

# a wider, deeper "tiny" with larger kernels: every kind of shrinking happens on the way to "tiny"
WIDE = dict(
    global_convs=((6, 17), (10, 13), (12, 3)),
    global_dim=40,
    local_convs=((10, 5), (20, 3)),
    backbone={"layers": (2, 2), "widths": (12, 20), "stem_width": 10},
    fusion_dim=40,
)


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm parameters and statistics, so that importance and outputs are not all alike."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=g) + 0.1)
                module.bias.copy_(torch.randn(n, generator=g) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model.eval()


def test_shrinking_to_the_same_config_returns_the_weights_unchanged():
    torch.manual_seed(0)
    model = _randomised(create_model("tiny", **WIDE))
    state = model.state_dict()
    out = shrink_state(state, model.config, model.config)
    assert set(out) == set(state)
    assert all(torch.equal(out[k], state[k]) for k in state)


def test_a_shrunk_model_loads_and_keeps_the_most_important_channels_in_order():
    torch.manual_seed(0)
    source = _randomised(create_model("tiny", **WIDE))
    with torch.no_grad():
        gamma = source.local_branch.convs[0][3].weight
        gamma.fill_(0.01)
        gamma[[7, 1, 4, 9, 2, 0, 8, 5]] = torch.arange(1.0, 9.0)  # channels 3 and 6 are the least important
    target = create_model("tiny")
    state = shrink_state(source.state_dict(), source.config, target.config)
    target.load_state_dict(state)
    kept = torch.tensor([0, 1, 2, 4, 5, 7, 8, 9])
    src_w = source.local_branch.convs[0][0].weight
    assert torch.equal(state["local_branch.convs.0.0.weight"], src_w[kept])
    next_w = source.local_branch.convs[1][0].weight  # the next conv reads only the kept channels
    assert state["local_branch.convs.1.0.weight"].shape[1] == 8
    chosen = torch.topk(source.local_branch.convs[1][3].weight, 16).indices.sort().values
    assert torch.equal(state["local_branch.convs.1.0.weight"], next_w[chosen][:, kept])
    # a 13x13 kernel becomes its 11x11 centre
    big = source.global_branch.convs[1][0].weight
    assert state["global_branch.convs.1.0.weight"].shape[-2:] == (11, 11)
    idx_out = torch.topk(source.global_branch.convs[1][3].weight, 8).indices.sort().values
    idx_in = torch.topk(source.global_branch.convs[0][3].weight, 4).indices.sort().values
    assert torch.equal(state["global_branch.convs.1.0.weight"], big[idx_out][:, idx_in, 1:12, 1:12])
    assert target(torch.rand(2, 1, 48, 48)).shape == (2, 7)


def test_dropping_silent_channels_and_blocks_leaves_the_output_unchanged():
    """Reference check: channels whose BatchNorm outputs zero, and residual blocks whose last BatchNorm outputs
    zero, contribute nothing, so removing them (which is what shrinking picks first) must not change the logits."""
    torch.manual_seed(0)
    # stem 12 = layer1's width: like the target, layer1 has no projection shortcut
    cfg = dict(WIDE, global_convs=((4, 17), (8, 11), (8, 3)), global_dim=32, fusion_dim=32)
    cfg["backbone"] = dict(WIDE["backbone"], stem_width=12)
    source = _randomised(create_model("tiny", **cfg))
    with torch.no_grad():
        for bn, keep in ((source.local_branch.convs[0][3], 8), (source.local_branch.convs[1][3], 16)):
            bn.weight[keep:] = 0  # silent channels: BatchNorm(ReLU(.)) = 0
            bn.bias[keep:] = 0
        for stage in (source.backbone.layer1, source.backbone.layer2):
            stage[1].bn2.weight.zero_()  # silent block: relu(0 + identity) = identity (identity is >= 0)
            stage[1].bn2.bias.zero_()
            block = stage[0]
            for bn in (block.bn1, block.bn2) + ((block.downsample[1],) if block.downsample else ()):
                keep = {12: 8, 20: 16}[bn.num_features]
                bn.weight[keep:] = 0
                bn.bias[keep:] = 0
        source.backbone.bn1.weight[8:] = 0  # the stem's silent channels pass through layer1's identity shortcut
        source.backbone.bn1.bias[8:] = 0
    target = create_model("tiny", global_convs=cfg["global_convs"]).eval()
    target.load_state_dict(shrink_state(source.state_dict(), source.config, target.config))
    x = torch.rand(4, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("override", "part"),
    [
        (dict(global_convs=((4, 17), (8, 11))), "global conv count"),
        (dict(backbone={"stem": "small"}), "backbone stem"),
        (dict(num_experts=2), "experts"),
        (dict(backbone={"stem_width": 4}), "projection shortcut"),  # stem 4 -> width 8 needs one; the source has none
    ],
)
def test_shrinking_across_topologies_names_what_differs(override, part):
    source = create_model("tiny", **WIDE) if "backbone" not in override else create_model("tiny")
    target = get_config("tiny", **override)
    with pytest.raises(ValueError, match=part):
        shrink_state(source.state_dict(), source.config, target)


def test_a_target_wider_than_the_source_is_refused():
    source = create_model("tiny")
    with pytest.raises(ValueError, match="source only"):
        shrink_state(source.state_dict(), source.config, get_config("tiny", global_dim=64))
