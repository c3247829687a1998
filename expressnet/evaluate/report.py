"""``expressnet evaluate``: metrics JSON plus confusion matrix, reliability diagram and MoE routing figures."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..data.prepare import Prepared
from ..io import atomic_write_text
from ..runtime import Classifier
from . import plots
from .core import evaluate_prepared, expert_ablation


def evaluate_report(
    model: nn.Module | Classifier,
    data: Prepared,
    tta_flip: bool = False,
    ablation: bool = True,
    batch_size: int = 256,
    precision: str = "fp32",
) -> dict:
    """Metrics, routing (MoE models) and, with ``ablation``, the drop-one-expert ablation."""
    result = evaluate_prepared(model, data, tta_flip, batch_size, precision)
    if ablation and "routing" in result:
        result["expert_ablation"] = expert_ablation(model, data, tta_flip, batch_size, precision)
    result["tta_flip"] = tta_flip
    result["skipped"] = len(data.skipped)
    result["data_fingerprint"] = data.fingerprint
    return result


def write_report_files(result: dict, data: Prepared, out_dir: str | Path, title: str = "") -> None:
    """metrics.json and the figures of an :func:`evaluate_report` result, in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=1))
    name = f"{title}: " if title else ""
    heading = f"{name}accuracy {result['accuracy']:.2%}, macro-F1 {result['macro_f1']:.3f}"
    plots.confusion_heatmap(result["confusion_matrix"], data.class_names, out / "confusion.png", heading)
    plots.reliability_diagram(result["calibration"], out / "reliability.png", f"{name}ECE {result['ece']:.3f}")
    for block, stats in result.get("routing", {}).items():
        entropy = stats["utilization_entropy"]
        heading = f"MoE '{block}': top-k load per class (utilisation entropy {entropy:.2f})"
        plots.routing_heatmap(stats["per_class_load"], data.class_names, out / f"routing_{block}.png", heading)


def write_report(
    model: nn.Module | Classifier,
    data: Prepared,
    out_dir: str | Path | None,
    tta_flip: bool = False,
    title: str = "",
    ablation: bool = True,
    batch_size: int = 256,
    precision: str = "fp32",
) -> dict:
    """:func:`evaluate_report`, then :func:`write_report_files` when ``out_dir`` is given. Returns the metrics."""
    result = evaluate_report(model, data, tta_flip, ablation, batch_size, precision)
    if out_dir is not None:
        write_report_files(result, data, out_dir, title)
    return result
