"""``expressnet evaluate``: metrics JSON plus confusion matrix, reliability diagram and MoE routing figures."""

from __future__ import annotations

import json
from pathlib import Path

from ..data.prepare import Prepared
from ..io import atomic_write_text
from ..nn import ExpressNetMoE
from . import plots
from .core import evaluate_prepared, expert_ablation


def write_report(
    model: ExpressNetMoE,
    data: Prepared,
    out_dir: str | Path | None,
    tta_flip: bool = False,
    title: str = "",
    ablation: bool = True,
    batch_size: int = 256,
    precision: str = "fp32",
) -> dict:
    """Evaluate and, when ``out_dir`` is given, write metrics.json and the figures there. Returns the metrics."""
    result = evaluate_prepared(model, data, tta_flip, batch_size, precision)
    if ablation:
        result["expert_ablation"] = expert_ablation(model, data, tta_flip, batch_size, precision)
    result["tta_flip"] = tta_flip
    result["skipped"] = len(data.skipped)
    result["data_fingerprint"] = data.fingerprint
    if out_dir is None:
        return result
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=1))
    name = f"{title}: " if title else ""
    plots.confusion_heatmap(
        result["confusion_matrix"], data.class_names, out / "confusion.png",
        f"{name}accuracy {result['accuracy']:.2%}, macro-F1 {result['macro_f1']:.3f}",
    )  # fmt: skip
    plots.reliability_diagram(result["calibration"], out / "reliability.png", f"{name}ECE {result['ece']:.3f}")
    for block, stats in result["routing"].items():
        entropy = stats["utilization_entropy"]
        title = f"MoE '{block}': top-k load per class (utilisation entropy {entropy:.2f})"
        plots.routing_heatmap(stats["per_class_load"], data.class_names, out / f"routing_{block}.png", title)
    return result
