"""Evaluate a model on prepared images: metrics, MoE routing statistics, drop-one-expert ablation.

``model`` is a torch module (from :func:`expressnet.load_model` or a training loop) or any
:class:`~expressnet.runtime.Classifier` (e.g. ONNX Runtime). Routing statistics and the ablation need an
ExpressNet-MoE module; for other models the metrics alone are returned.
"""

from __future__ import annotations

from torch import nn

from ..data.prepare import Prepared
from ..nn import ExpressNetMoE, RoutingStats
from ..runtime import Classifier, TorchClassifier, predict_logits, softmax
from .metrics import classification_metrics


def moe_module(model: nn.Module | Classifier) -> ExpressNetMoE | None:
    """The ExpressNet-MoE behind ``model``, if there is one (routing and ablation need it)."""
    module = model.module if isinstance(model, TorchClassifier) else model
    return module if isinstance(module, ExpressNetMoE) else None


def evaluate_prepared(
    model: nn.Module | Classifier,
    data: Prepared,
    tta_flip: bool = False,
    batch_size: int = 256,
    precision: str = "fp32",
    routing: bool = True,
) -> dict:
    """Metrics of ``model`` on ``data`` (labels in ``data.class_names`` order) and, for MoE models, per-block
    routing statistics."""
    moe = moe_module(model) if routing else None
    stats = {}
    if moe is not None:
        stats = {name: RoutingStats(m.num_experts, len(data.class_names)) for name, m in moe.moe_blocks.items()}

        def collect(start: int, stop: int) -> None:
            for name, r in moe.routing.items():
                stats[name].update(r, data.labels[start:stop])

        logits = predict_logits(moe, data.images, batch_size, tta_flip, precision, on_batch=collect).numpy()
    elif isinstance(model, Classifier):
        logits = model.logits(data.images, tta_flip)
    else:
        logits = predict_logits(model, data.images, batch_size, tta_flip, precision).numpy()
    result = classification_metrics(softmax(logits), data.labels.numpy(), data.class_names)
    if moe is not None:
        result["routing"] = {name: s.summary() for name, s in stats.items()}
    return result


def expert_ablation(
    model: nn.Module | Classifier,
    data: Prepared,
    tta_flip: bool = False,
    batch_size: int = 256,
    precision: str = "fp32",
) -> dict:
    """Accuracy and macro-F1 with each expert of each MoE block switched off in turn (the gate then picks
    among the remaining experts). Empty for models without MoE blocks."""
    module = moe_module(model)
    if module is None:
        return {}
    out = {}
    for name, moe in module.moe_blocks.items():
        rows = []
        for e in range(moe.num_experts):
            moe.disabled_experts = {e}
            try:
                m = evaluate_prepared(module, data, tta_flip, batch_size, precision, routing=False)
            finally:
                moe.disabled_experts = set()
            rows.append({"expert": e, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]})
        out[name] = rows
    return out
