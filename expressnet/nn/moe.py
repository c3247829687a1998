"""Mixture-of-experts block with the paper's top-k gating and optional modern routing aids.

Default = the paper: ``num_experts`` dense experts ``Linear(d, d) + ReLU``, a softmax gate ``Linear(d, E)``,
the top-2 gate probabilities per sample kept *without* renormalisation, output
``sum_{e in top-k} p_e * expert_e(x)``, no gate noise, no auxiliary loss.

Options: renormalised top-k weights, noisy top-k gating (Shazeer et al. 2017; training only), a
Switch-Transformer load-balancing loss and the ST-MoE router z-loss. The losses are returned in
:class:`Routing` (``aux_loss``) for the trainer to add; they are never applied silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Routing:
    """What one MoE forward pass decided. Tensors are detached except ``aux_loss``."""

    gate_logits: torch.Tensor  # (N, E), after noise and expert masking
    gate_probs: torch.Tensor  # (N, E) softmax of gate_logits
    topk_indices: torch.Tensor  # (N, k) chosen experts, best first
    topk_weights: torch.Tensor  # (N, k) weights applied to the chosen experts' outputs
    aux_loss: torch.Tensor  # scalar: weighted balance loss + z-loss (0 when both weights are 0)


class Expert(nn.Module):
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(x))


class MixtureOfExperts(nn.Module):
    """Top-k gated mixture of dense experts: (N, in_features) -> (N, out_features)."""

    def __init__(
        self,
        in_features: int,
        out_features: int | None = None,
        num_experts: int = 4,
        top_k: int = 2,
        renormalize: bool = False,
        noisy_gating: bool = False,
        balance_loss_weight: float = 0.0,
        z_loss_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, {num_experts}], got {top_k}")
        out_features = out_features or in_features
        self.num_experts, self.top_k = num_experts, top_k
        self.renormalize = renormalize
        self.balance_loss_weight, self.z_loss_weight = balance_loss_weight, z_loss_weight
        self.experts = nn.ModuleList(Expert(in_features, out_features) for _ in range(num_experts))
        self.gate = nn.Linear(in_features, num_experts)
        # Noisy gating learns a per-expert noise scale; the layer exists only when asked for.
        self.noise = nn.Linear(in_features, num_experts) if noisy_gating else None
        self.disabled_experts: set[int] = set()  # for drop-one-expert ablations
        self.last_routing: Routing | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.gate(x)
        if self.noise is not None and self.training:
            logits = logits + torch.randn_like(logits) * F.softplus(self.noise(x))
        if self.disabled_experts:
            mask = torch.zeros(self.num_experts, dtype=torch.bool, device=x.device)
            mask[sorted(self.disabled_experts)] = True
            logits = logits.masked_fill(mask, float("-inf"))
        k = min(self.top_k, self.num_experts - len(self.disabled_experts))
        probs = logits.float().softmax(dim=-1)
        weights, indices = probs.topk(k, dim=-1)
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        combine = torch.zeros_like(probs).scatter(1, indices, weights)  # (N, E), zero off the top-k
        outputs = torch.stack([expert(x) for expert in self.experts], dim=1)  # (N, E, D)
        y = torch.einsum("ne,ned->nd", combine.to(outputs.dtype), outputs)
        self.last_routing = Routing(
            gate_logits=logits.detach(),
            gate_probs=probs.detach(),
            topk_indices=indices.detach(),
            topk_weights=weights.detach(),
            aux_loss=self._aux_loss(logits, probs, indices),
        )
        return y

    def _aux_loss(self, logits: torch.Tensor, probs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        loss = probs.new_zeros(())
        if self.balance_loss_weight:
            loss = loss + self.balance_loss_weight * load_balancing_loss(probs, indices, self.num_experts)
        if self.z_loss_weight:
            finite = logits.float().masked_fill(torch.isinf(logits), -1e4)
            loss = loss + self.z_loss_weight * torch.logsumexp(finite, dim=-1).square().mean()
        return loss


def load_balancing_loss(probs: torch.Tensor, indices: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Switch-Transformer balance loss ``E * sum_e f_e * P_e``; 1.0 when routing is perfectly uniform.

    ``f_e`` is the share of top-k assignments that went to expert e (no gradient), ``P_e`` the mean gate
    probability of e (carries the gradient).
    """
    counts = torch.zeros(num_experts, device=probs.device).index_add_(
        0, indices.reshape(-1), torch.ones(indices.numel(), device=probs.device)
    )
    f = counts / indices.numel()
    return num_experts * (f * probs.mean(dim=0)).sum()


def _normalised_entropy(p: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Entropy of distributions along the last axis, divided by log(E) so that uniform = 1."""
    p = p.clamp_min(0)
    h = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=-1)
    return h / math.log(num_experts) if num_experts > 1 else torch.zeros_like(h)


class RoutingStats:
    """Accumulates routing statistics over batches (and per class when labels are given).

    ``summary()`` gives per-expert load share by top-1 and by top-k assignment, the normalised entropy of
    the top-k load (1 = all experts used equally), the mean normalised per-sample gate entropy (0 = hard,
    confident routing) and, with labels, a class x expert table of top-k load shares (rows sum to 1).
    """

    def __init__(self, num_experts: int, num_classes: int | None = None) -> None:
        self.num_experts, self.num_classes = num_experts, num_classes
        self.n = 0
        self.top1 = torch.zeros(num_experts, dtype=torch.float64)
        self.topk = torch.zeros(num_experts, dtype=torch.float64)
        self.importance = torch.zeros(num_experts, dtype=torch.float64)
        self.gate_entropy_sum = 0.0
        self.per_class = torch.zeros(num_classes or 0, num_experts, dtype=torch.float64)

    def update(self, routing: Routing, labels: torch.Tensor | None = None) -> None:
        idx = routing.topk_indices.cpu()
        probs = routing.gate_probs.cpu().double()
        e = self.num_experts
        self.n += idx.shape[0]
        self.top1 += torch.bincount(idx[:, 0], minlength=e).double()
        self.topk += torch.bincount(idx.reshape(-1), minlength=e).double()
        self.importance += probs.sum(dim=0)
        self.gate_entropy_sum += float(_normalised_entropy(probs, e).sum())
        if labels is not None and self.num_classes:
            labels = labels.cpu()
            if labels.ndim == 2:  # soft labels
                labels = labels.argmax(dim=1)
            onehot = F.one_hot(idx, e).sum(dim=1).double()  # (N, E)
            self.per_class.index_add_(0, labels.long(), onehot)

    def summary(self) -> dict:
        n = max(self.n, 1)
        topk_share = self.topk / max(float(self.topk.sum()), 1.0)
        out = {
            "n": self.n,
            "load_top1": (self.top1 / n).tolist(),
            "load_topk": topk_share.tolist(),
            "importance": (self.importance / n).tolist(),
            "utilization_entropy": float(_normalised_entropy(topk_share, self.num_experts)),
            "mean_gate_entropy": self.gate_entropy_sum / n,
        }
        if self.num_classes:
            rows = self.per_class / self.per_class.sum(dim=1, keepdim=True).clamp_min(1)
            out["per_class_load"] = rows.tolist()
        return out


def routing_stats(routing: Routing, labels: torch.Tensor | None = None, num_classes: int | None = None) -> dict:
    """Statistics of a single batch (see :class:`RoutingStats`)."""
    stats = RoutingStats(routing.gate_probs.shape[1], num_classes)
    stats.update(routing, labels)
    return stats.summary()
