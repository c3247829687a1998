"""The model library: paper fidelity, presets, shapes, routing access, config round trip."""

import pytest
import torch

from expressnet.nn import ExpressNetConfig, create_model, eval_mode, get_config, list_presets
from expressnet.nn.expressnet import ConvUnit
from expressnet.nn.rewrite import (
    PoolThenNormUnit,
    SpaceToDepthUnit,
    norm_after_pool,
    norm_after_pool_applies,
    space_to_depth_applies,
    space_to_depth_first_unit,
    space_to_depth_pays,
)
from expressnet.nn.summary import batchnorm_statistics, model_costs


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(("num_classes", "expected"), [(7, 35_876_751), (8, 35_877_776)])
def test_paper_parameter_counts_match_the_paper(num_classes, expected):
    model = create_model("paper", num_classes=num_classes)
    assert trainable(model) == expected
    assert batchnorm_statistics(model) == 55_120
    # the per-block figures paper.md gives
    assert trainable(model.moe_global) == trainable(model.moe_expression) == 1_052_676
    if num_classes == 7:
        assert trainable(model.head) == 7_175


def test_paper_layers_are_the_papers():
    model = create_model("paper")
    convs = [u[0] for u in model.global_branch.convs]
    assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [
        (8, 75),
        (16, 50),
        (32, 25),
        (64, 15),
        (128, 9),
        (256, 3),
    ]
    assert [(u[0].out_channels, u[0].kernel_size[0]) for u in model.local_branch.convs] == [
        (16, 15),
        (32, 7),
        (64, 5),
        (128, 3),
        (256, 3),
    ]
    # conv -> ReLU -> Dropout(0.1) -> BatchNorm -> MaxPool, no pool after the last conv of a branch
    first, last = model.global_branch.convs[0], model.global_branch.convs[-1]
    assert [type(m).__name__ for m in first] == ["SameConv2d", "ReLU", "Dropout", "BatchNorm2d", "MaxPool2d"]
    assert first[2].p == 0.1
    assert [type(m).__name__ for m in last] == ["SameConv2d", "ReLU", "Dropout", "BatchNorm2d"]
    assert model.global_branch.flat_features == 7 * 7 * 256
    assert model.backbone.out_features == 2048
    assert model.fusion.fc.in_features == 256 + 2048 and model.fusion.fc.out_features == 512
    assert all(m.bias is None for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    for moe in (model.moe_global, model.moe_expression):
        assert moe.num_experts == 4 and moe.top_k == 2 and not moe.renormalize and moe.noise is None
    costs = model_costs(model)
    assert costs["total"].params == 35_876_751
    assert 17.0e9 < costs["total"].macs < 18.0e9  # paper.md: ~17.5 GMACs per image


@pytest.mark.parametrize("num_classes", [7, 8])
def test_paper_forward_shapes_and_routing(num_classes):
    torch.manual_seed(0)
    model = create_model("paper", num_classes=num_classes).eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        logits, routing = model(x, return_routing=True)
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()
    assert set(routing) == {"global", "expression"}
    for r in routing.values():
        assert r.gate_probs.shape == (2, 4) and r.topk_indices.shape == (2, 2)
    assert model.routing["global"] is routing["global"]  # available without a second pass


@pytest.mark.parametrize("preset", [p for p in list_presets() if p not in ("paper", "tiny")])
@pytest.mark.parametrize("num_classes", [7, 8])
def test_compact_presets_forward_backward(preset, num_classes):
    model = create_model(preset, num_classes=num_classes)
    cfg = model.config
    x = torch.rand(3, cfg.in_channels, cfg.input_size, cfg.input_size)
    logits = model(x)
    assert logits.shape == (3, num_classes)
    logits.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "noise" not in n)
    # the branches read 48-80 px (the face presets pool a larger crop for them; the backbone reads it whole)
    assert 48 <= (cfg.branch_size or cfg.input_size) <= 80
    # same topology as the paper: both branches, residual backbone, two MoE blocks
    assert len(cfg.global_convs) >= 4 and len(cfg.local_convs) >= 3
    assert model.moe_global.num_experts == model.moe_expression.num_experts == 4


def test_compact_global_kernels_scale_with_input_size():
    assert [k for _, k in get_config("compact").global_convs] == [17, 11, 5, 3]
    assert [k for _, k in get_config("compact-rgb64").global_convs] == [21, 15, 7, 5]


def test_overrides_and_unknown_preset():
    model = create_model("compact", top_k=1, moe_renormalize=True, num_experts=6)
    assert model.moe_global.top_k == 1 and model.moe_global.num_experts == 6 and model.moe_global.renormalize
    with pytest.raises(KeyError, match="unknown preset"):
        create_model("nope")
    with pytest.raises(ValueError, match="not_a_field"):
        create_model("compact", not_a_field=1)
    nested = create_model("compact", backbone={"layers": [1, 1, 1, 1]})  # partial nested override
    assert nested.config.backbone.layers == (1, 1, 1, 1) and nested.config.backbone.widths == (48, 96, 192, 384)


def test_config_round_trip():
    cfg = get_config("compact", num_classes=8, noisy_gating=True)
    assert ExpressNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config keys"):
        ExpressNetConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_aux_loss_is_zero_by_default_and_differentiable_when_enabled():
    x = torch.rand(4, 1, 48, 48)
    plain = create_model("compact-s")
    plain(x)
    assert float(plain.aux_loss()) == 0.0
    balanced = create_model("compact-s", balance_loss_weight=0.01, z_loss_weight=0.001)
    balanced(x)
    loss = balanced.aux_loss()
    assert loss.item() > 0
    loss.backward()
    assert balanced.moe_global.gate.weight.grad.abs().sum() > 0


def test_model_summary_cli():
    from typer.testing import CliRunner

    from expressnet.cli import app

    result = CliRunner().invoke(app, ["model-summary", "--preset", "paper", "--num-classes", "8"])
    assert result.exit_code == 0, result.output
    assert "35,877,776" in result.output and "55,120" in result.output
    for part in ("global", "local", "backbone", "fusion", "moe", "head", "total"):
        assert part in result.output
    result = CliRunner().invoke(app, ["model-summary", "--preset", "compact", "--input-size", "64"])
    assert result.exit_code == 0 and "64x64x1" in result.output


def test_eval_mode_gives_each_submodule_its_own_mode_back():
    # a model fine-tuned with frozen BatchNorm: training, but its BatchNorm layers in eval mode
    net = create_model("tiny").train()
    frozen = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in frozen:
        m.eval()
    before = [m.training for m in net.modules()]
    assert any(before) and not all(before)
    with eval_mode(net) as inside:
        assert inside is net and not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == before
    with pytest.raises(RuntimeError), eval_mode(net):
        raise RuntimeError("a failing forward")
    assert [m.training for m in net.modules()] == before  # restored when the block raises


@pytest.mark.parametrize("preset", ["tiny", "compact", "compact-xs"])
def test_space_to_depth_rewrite_is_exact(preset):
    torch.manual_seed(0)
    net = create_model(preset).eval()
    unit = net.global_branch.convs[0]
    with torch.no_grad():  # BatchNorm statistics and a negative scale, so the max must be taken after it
        unit[3].running_mean.uniform_(-0.5, 0.5)
        unit[3].running_var.uniform_(0.5, 2.0)
        unit[3].weight.uniform_(-1.5, 1.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rewritten = space_to_depth_first_unit(net)
    x = torch.rand(3, 1, 48, 48)
    with torch.no_grad():
        assert (rewritten(x) - net(x)).abs().max().item() < 1e-4
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the model is left as it was
    assert isinstance(net.global_branch.convs[0], torch.nn.Sequential)


def test_space_to_depth_rule():
    assert space_to_depth_pays(create_model("compact"))  # 17x17 first kernel at 48 px: measured faster
    assert space_to_depth_pays(create_model("compact-xs"))  # 9x9
    assert not space_to_depth_pays(create_model("compact-xs", global_convs=((4, 5), (8, 5), (16, 5), (32, 3))))
    assert not space_to_depth_pays(create_model("compact-rgb64"))  # applies, but not measured there
    assert space_to_depth_applies(create_model("compact-rgb64"))
    assert not space_to_depth_applies(create_model("tiny", input_size=47))  # odd input size
    with pytest.raises(ValueError, match="space-to-depth"):
        space_to_depth_first_unit(create_model("tiny", input_size=47))


@pytest.mark.parametrize(("cin", "kernel", "bias"), [(1, 3, True), (3, 7, False), (2, 21, True)])
def test_space_to_depth_unit_matches_the_unit(cin, kernel, bias):
    torch.manual_seed(kernel)
    unit = ConvUnit(cin, 6, kernel, dropout=0.5, pool=True)
    if not bias:
        unit[0].bias = None
    with torch.no_grad():
        unit[3].running_mean.uniform_(-0.5, 0.5)
        unit[3].weight.uniform_(-1.5, 1.5)
    unit.eval()
    folded = SpaceToDepthUnit(unit)
    assert folded.weight.shape[-1] == 2 * ((kernel // 2 + 1) // 2) + 1  # no all-zero ring around the kernel
    x = torch.rand(2, cin, 32, 24)
    with torch.no_grad():
        assert (folded(x) - unit(x)).abs().max().item() < 1e-4


def _trained_like(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """``net`` in eval mode with BatchNorm statistics and non-negative scales as training leaves them."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.0, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return net.eval()


@pytest.mark.parametrize("preset", ["tiny", "compact", "compact-xs"])
@pytest.mark.parametrize("first", ["plain", "space_to_depth"])
def test_norm_after_pool_gives_the_same_outputs_to_the_bit(preset, first):
    net = _trained_like(create_model(preset), seed=1)
    if first == "space_to_depth":
        net = space_to_depth_first_unit(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    moved = norm_after_pool(net)
    units = [u for b in (moved.global_branch, moved.local_branch) for u in b.convs]
    assert sum(isinstance(u, PoolThenNormUnit) for u in units) >= 2
    if first == "space_to_depth":
        assert moved.global_branch.convs[0].norm_last and not net.global_branch.convs[0].norm_last
    x = torch.rand(5, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(moved(x), net(x))  # a max commutes with a non-decreasing map, float rounding too
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the model is left as it was
    assert not any(isinstance(u, PoolThenNormUnit) for u in net.local_branch.convs)


def test_norm_after_pool_leaves_a_unit_with_a_negative_scale():
    net = _trained_like(create_model("tiny"), seed=2)
    with torch.no_grad():
        net.local_branch.convs[0][3].weight[1] = -0.3  # a decreasing channel: max and BatchNorm do not commute
    moved = norm_after_pool(net)
    assert isinstance(moved.local_branch.convs[0], ConvUnit)
    assert isinstance(moved.global_branch.convs[0], PoolThenNormUnit)
    x = torch.rand(4, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(moved(x), net(x))
        for units in (net.global_branch.convs, net.local_branch.convs):
            for unit in units:
                if len(unit) == 5:
                    unit[3].weight.neg_()
    assert not norm_after_pool_applies(net)
    with pytest.raises(ValueError, match="norm-after-pool"):
        norm_after_pool(net)
