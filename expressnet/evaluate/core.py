"""Evaluate a model on prepared images: metrics, MoE routing statistics, drop-one-expert ablation."""

from __future__ import annotations

import torch

from ..data.prepare import Prepared
from ..infer.classify import predict_logits
from ..nn import ExpressNetMoE, RoutingStats
from .metrics import classification_metrics


def evaluate_prepared(
    model: ExpressNetMoE,
    data: Prepared,
    tta_flip: bool = False,
    batch_size: int = 256,
    precision: str = "fp32",
    routing: bool = True,
) -> dict:
    """Metrics of ``model`` on ``data`` (labels in ``data.class_names`` order) and per-block routing stats."""
    stats = {name: RoutingStats(moe.num_experts, len(data.class_names)) for name, moe in model.moe_blocks.items()}

    def collect(start: int, stop: int) -> None:
        for name, r in model.routing.items():
            stats[name].update(r, data.labels[start:stop])

    logits = predict_logits(model, data.images, batch_size, tta_flip, precision, on_batch=collect if routing else None)
    probs = torch.softmax(logits, dim=1).numpy()
    result = classification_metrics(probs, data.labels.numpy(), data.class_names)
    if routing:
        result["routing"] = {name: s.summary() for name, s in stats.items()}
    return result


def expert_ablation(
    model: ExpressNetMoE, data: Prepared, tta_flip: bool = False, batch_size: int = 256, precision: str = "fp32"
) -> dict:
    """Accuracy and macro-F1 with each expert of each MoE block switched off in turn (the gate then picks
    among the remaining experts)."""
    out = {}
    for name, moe in model.moe_blocks.items():
        rows = []
        for e in range(moe.num_experts):
            moe.disabled_experts = {e}
            try:
                m = evaluate_prepared(model, data, tta_flip, batch_size, precision, routing=False)
            finally:
                moe.disabled_experts = set()
            rows.append({"expert": e, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]})
        out[name] = rows
    return out
