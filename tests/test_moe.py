"""Mixture-of-experts semantics and routing statistics."""

import math

import pytest
import torch

from expressnet.nn.moe import MixtureOfExperts, Routing, RoutingStats, load_balancing_loss, routing_stats


def reference_moe(moe: MixtureOfExperts, x: torch.Tensor, renormalize: bool) -> torch.Tensor:
    """Per-sample loop over the chosen experts, straight from the definition."""
    out = []
    for xi in x:
        probs = torch.softmax(moe.gate(xi), dim=-1)
        order = sorted(range(moe.num_experts), key=lambda e: -float(probs[e]))[: moe.top_k]
        weights = [probs[e] for e in order]
        if renormalize:
            total = sum(weights)
            weights = [w / total for w in weights]
        out.append(sum(w * torch.relu(moe.experts[e].fc(xi)) for w, e in zip(weights, order)))
    return torch.stack(out)


@pytest.mark.parametrize(("experts", "k"), [(4, 2), (4, 1), (6, 3), (3, 3)])
@pytest.mark.parametrize("renormalize", [False, True])
def test_topk_output_matches_reference(experts, k, renormalize):
    torch.manual_seed(experts * 10 + k)
    moe = MixtureOfExperts(16, num_experts=experts, top_k=k, renormalize=renormalize)
    x = torch.randn(32, 16)
    with torch.no_grad():
        assert torch.allclose(moe(x), reference_moe(moe, x, renormalize), atol=1e-5)
        r = moe.last_routing
    assert r.topk_indices.shape == (32, k)
    expected_sum = torch.ones(32) if renormalize else r.gate_probs.gather(1, r.topk_indices).sum(1)
    assert torch.allclose(r.topk_weights.sum(1), expected_sum, atol=1e-6)
    if not renormalize and k < experts:
        assert (r.topk_weights.sum(1) < 1).all()  # the paper does not renormalise


def test_paper_default_and_parameter_count():
    moe = MixtureOfExperts(512)
    assert (moe.num_experts, moe.top_k, moe.renormalize, moe.noise) == (4, 2, False, None)
    assert sum(p.numel() for p in moe.parameters()) == 1_052_676


def test_noisy_gating_only_in_training():
    torch.manual_seed(0)
    moe = MixtureOfExperts(8, noisy_gating=True)
    x = torch.randn(64, 8)
    moe.eval()
    with torch.no_grad():
        a, b = moe(x), moe(x)
    assert torch.equal(a, b)
    moe.train()
    with torch.no_grad():
        c, d = moe(x), moe(x)
    assert not torch.equal(c, d)


def test_disabled_expert_is_never_chosen():
    torch.manual_seed(1)
    moe = MixtureOfExperts(8, num_experts=4, top_k=2)
    moe.disabled_experts = {2}
    moe(torch.randn(100, 8))
    r = moe.last_routing
    assert not (r.topk_indices == 2).any()
    assert float(r.gate_probs[:, 2].max()) == 0.0


def test_balance_loss_is_one_when_uniform_and_larger_when_collapsed():
    n, e = 8, 4
    uniform = torch.full((n, e), 1 / e)
    idx = torch.arange(n).remainder(e).unsqueeze(1)
    assert load_balancing_loss(uniform, idx, e).item() == pytest.approx(1.0)
    collapsed = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).repeat(n, 1)
    assert load_balancing_loss(collapsed, torch.zeros(n, 1, dtype=torch.long), e).item() == pytest.approx(4 * 0.97)


def test_z_loss_value():
    torch.manual_seed(0)
    moe = MixtureOfExperts(8, z_loss_weight=0.5)
    x = torch.randn(5, 8)
    moe(x)
    expected = 0.5 * torch.logsumexp(moe.gate(x), dim=-1).square().mean()
    assert moe.last_routing.aux_loss.item() == pytest.approx(expected.item(), rel=1e-5)


def make_routing(indices, probs) -> Routing:
    idx = torch.tensor(indices)
    p = torch.tensor(probs, dtype=torch.float32)
    return Routing(p.log(), p, idx, p.gather(1, idx), torch.zeros(()))


def test_routing_stats_by_hand():
    # 4 samples, 4 experts, top-2. Top-1: experts 0,0,1,2; all top-k: 0,1 | 0,2 | 1,3 | 2,3
    probs = [[0.7, 0.1, 0.1, 0.1], [0.4, 0.2, 0.3, 0.1], [0.25, 0.25, 0.25, 0.25], [0.1, 0.1, 0.5, 0.3]]
    r = make_routing([[0, 1], [0, 2], [1, 3], [2, 3]], probs)
    stats = RoutingStats(4, num_classes=2)
    stats.update(r, torch.tensor([0, 0, 1, 1]))
    s = stats.summary()
    assert s["n"] == 4
    assert s["load_top1"] == pytest.approx([0.5, 0.25, 0.25, 0.0])
    assert s["load_topk"] == pytest.approx([0.25, 0.25, 0.25, 0.25])
    assert s["utilization_entropy"] == pytest.approx(1.0)
    ent = [-sum(p * math.log(p) for p in row) / math.log(4) for row in probs]
    assert s["mean_gate_entropy"] == pytest.approx(sum(ent) / 4, rel=1e-6)
    assert s["per_class_load"][0] == pytest.approx([0.5, 0.25, 0.25, 0.0])
    assert s["per_class_load"][1] == pytest.approx([0.0, 0.25, 0.25, 0.5])
    # accumulating a second, collapsed batch lowers utilisation entropy
    stats.update(make_routing([[0, 1]] * 4, [[0.9, 0.05, 0.03, 0.02]] * 4))
    assert stats.summary()["utilization_entropy"] < 1.0
    assert routing_stats(r)["load_topk"] == pytest.approx([0.25] * 4)
