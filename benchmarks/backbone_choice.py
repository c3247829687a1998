"""RAF-DB candidates side by side (issue #32): validation metrics, training and inference speed.

    python benchmarks/backbone_choice.py CANDIDATE... [--out reports/backbone-choice]

A candidate is ``label=model``: a shipped name, a checkpoint or a training run folder (its best.safetensors),
e.g. ``A=rafdb B=runs/rafdb-face-hse112``. For each it reports, on RAF-DB validation only (the seeded 10 % of
train every candidate was selected on): accuracy, macro-F1, per-class F1 and ECE, with the model's own flip
averaging; the training speed its run recorded (mean images/s over its epochs, from history.json); and the
inference speed of its float32 ONNX export with ONNX Runtime (faces/s at batch 64, 2 threads, flip averaging
off, every candidate timed in the same run, rounds alternating). Writes ``summary.json`` and ``summary.md``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from expressnet.data import load_dataset, prepare_split
from expressnet.evaluate.core import evaluate_prepared
from expressnet.hub import load_model, resolve_model
from expressnet.io import atomic_write_text
from expressnet.runtime.onnx import cpu_session, export_onnx


def training_speed(model: str) -> float | None:
    """Mean images/s of the run behind ``model`` (its history.json), None for a model without one."""
    path = resolve_model(model)
    history = path.parent / "history.json"
    if not history.is_file():
        source = json.loads(path.with_suffix(".json").read_text()).get("packed_from") if path.suffix else None
        history = Path(source).parent / "history.json" if source else history
    if not history.is_file():
        return None
    epochs = json.loads(history.read_text())["epochs"]
    return float(np.mean([e["images_per_s"] for e in epochs]))


def onnx_speeds(models: dict[str, object], rounds: int = 5, batch: int = 64) -> dict[str, float]:
    """Faces/s of each model's float32 ONNX export, timed in alternating rounds."""
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, model in models.items():
            path = Path(tmp) / f"{label}.onnx"
            export_onnx(model, path)
            sessions[label] = cpu_session(path, threads=2)
        times: dict[str, list[float]] = {label: [] for label in models}
        for _ in range(rounds):
            for label, session in sessions.items():
                pre = models[label].preprocessing
                x = np.random.default_rng(0).random((batch, pre.channels, pre.input_size, pre.input_size))
                x = x.astype(np.float32)
                session.run(None, {session.get_inputs()[0].name: x})  # warm
                start = time.perf_counter()
                session.run(None, {session.get_inputs()[0].name: x})
                times[label].append(time.perf_counter() - start)
    return {label: batch / float(np.median(t)) for label, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="+", help="label=model")
    parser.add_argument("--out", type=Path, default=Path("reports/backbone-choice"))
    args = parser.parse_args()
    named = dict(c.split("=", 1) for c in args.candidates)
    models = {label: load_model(model) for label, model in named.items()}
    val = load_dataset("rafdb").split("val")
    result = {}
    for label, model in models.items():
        m = evaluate_prepared(
            model,
            prepare_split(val.relabel(model.class_names), model.preprocessing),
            bool(model.metadata.get("tta_flip")),
            routing=False,
        )
        result[label] = {
            "model": named[label],
            "preset": model.metadata.get("preset"),
            "input": f"{model.preprocessing.input_size} px, {model.preprocessing.channels} ch",
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "ece": m["ece"],
            "per_class_f1": {k: v["f1"] for k, v in m["per_class"].items()},
            "train_images_per_s": training_speed(named[label]),
        }
    for label, speed in onnx_speeds(models).items():
        result[label]["onnx_faces_per_s"] = speed
    classes = list(next(iter(result.values()))["per_class_f1"])
    lines = [
        "| candidate | preset | input | val accuracy | macro-F1 | ECE | "
        + " | ".join(f"F1 {c}" for c in classes)
        + " | train img/s | ONNX faces/s |",
        "|---|---|---|---:|---:|---:|" + "---:|" * len(classes) + "---:|---:|",
    ]
    for label, r in result.items():
        train = f"{r['train_images_per_s']:.0f}" if r["train_images_per_s"] else "n/a"
        lines.append(
            f"| {label} ({r['model']}) | {r['preset']} | {r['input']} | {r['accuracy']:.2%} | {r['macro_f1']:.3f} | "
            f"{r['ece']:.3f} | "
            + " | ".join(f"{r['per_class_f1'][c]:.3f}" for c in classes)
            + f" | {train} | {r['onnx_faces_per_s']:.0f} |"
        )
    table = "\n".join(lines).replace("%", " %")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "summary.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(args.out / "summary.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
