"""Shipped models, one record each, and loading by name or path, offline.

Every fact about a shipped model lives in its record in ``weights/models.json`` (the torchvision ``Weights`` /
timm ``PretrainedCfg`` idea): its files with their sha256, the file it infers with (``inference``: an ONNX file
run by ONNX Runtime, or the torch checkpoint) and that file's precision, class names, preprocessing, metrics
measured on that inference path, the recipe (config, and the sha256 of the init and teacher models), licence and
data notes. ``list_models()`` and ``expressnet models`` answer from the records; the backend choice
(:func:`expressnet.runtime.load_classifier`) and the README's models table derive from them
(``benchmarks/model_records.py`` measures the metrics and writes the hashes). Shipping a model is one record plus
its files.

This module needs no torch: :func:`load_model` (a torch module) imports it when it is called.

    list_models()                    # ["fer2013", "ferplus", ...]
    get_record("ferplus").inference  # "ferplus.int8.onnx"
    load_model("ferplus")            # the torch model (needs the torch extra)
"""

from __future__ import annotations

import functools
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).parent / "weights"
RECORDS_FILE = WEIGHTS_DIR / "models.json"
RECORDS_FORMAT = "expressnet-models/1"
PRECISIONS = ("float32", "int8")
SHA_PREFIX = 12  # hex digits of a file's sha256 that outputs name


class CheckpointError(Exception):
    """A model file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class ModelRecord:
    """One shipped model. ``files`` maps each file name (in ``weights/``) to its ``sha256`` and ``bytes``;
    ``checkpoint`` is the torch checkpoint (training, evaluation with routing, export, :func:`load_model`) and
    ``inference`` the file ``Recognizer``, ``predict`` and ``serve`` run on a CPU, of ``precision`` ("float32" or
    "int8"). ``metrics`` are measured on that file (each entry: data, split, n, accuracy, macro_f1, ..., backend,
    file). ``recipe``: the training config and the sha256 of the models it started from and learned from."""

    name: str
    title: str
    classes: tuple[str, ...]
    preprocessing: dict[str, Any]
    tta_flip: bool
    checkpoint: str
    inference: str
    precision: str
    files: dict[str, dict[str, Any]]
    metrics: tuple[dict[str, Any], ...] = ()
    recipe: dict[str, Any] = field(default_factory=dict)
    architecture: str = ""
    trained_on: str = ""
    use: str = ""
    licence: str = ""
    data_notes: str = ""
    notes: str = ""
    int8_keep_float: tuple[str, ...] | None = None

    @property
    def backend(self) -> str:
        """How the inference file runs on a CPU: "onnx" (ONNX Runtime) or "torch"."""
        return "onnx" if self.inference.endswith(".onnx") else "torch"

    @property
    def inference_path(self) -> Path:
        return WEIGHTS_DIR / self.inference

    @property
    def checkpoint_path(self) -> Path:
        return WEIGHTS_DIR / self.checkpoint

    def sha256(self, file: str | None = None) -> str:
        """The recorded sha256 of ``file`` (default: the inference file)."""
        return self.files[file or self.inference]["sha256"]

    def test_metric(self) -> dict[str, Any] | None:
        """The first metric measured on a test split (the headline figure), if any."""
        return next((m for m in self.metrics if m.get("role") == "test"), None)

    def to_dict(self) -> dict[str, Any]:
        """The record as ``list_models(details=True)`` and ``expressnet models --json`` show it."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out.update(classes=list(self.classes), metrics=list(self.metrics), backend=self.backend)
        if self.int8_keep_float is not None:
            out["int8_keep_float"] = list(self.int8_keep_float)
        return out


def record_from_dict(name: str, d: dict[str, Any], source: Path = RECORDS_FILE) -> ModelRecord:
    """A record from its JSON form; unknown or missing fields are an error naming the file and the model."""
    known = set(ModelRecord.__dataclass_fields__) - {"name"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise CheckpointError(f"{source}: model {name!r} has unknown fields {unknown} (known: {sorted(known)})")
    try:
        record = ModelRecord(
            name=name,
            **{
                **d,
                "classes": tuple(d["classes"]),
                "metrics": tuple(d.get("metrics", ())),
                "int8_keep_float": None if d.get("int8_keep_float") is None else tuple(d["int8_keep_float"]),
            },
        )
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{source}: model {name!r} is incomplete ({exc})") from exc
    for role in ("checkpoint", "inference"):
        if getattr(record, role) not in record.files:
            raise CheckpointError(f"{source}: model {name!r}: its {role} file is not among its files")
    if record.precision not in PRECISIONS:
        raise CheckpointError(f"{source}: model {name!r}: precision must be one of {PRECISIONS}")
    return record


@functools.cache
def _records() -> tuple[str, dict[str, ModelRecord]]:
    try:
        data = json.loads(RECORDS_FILE.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{RECORDS_FILE}: the model records cannot be read ({exc})") from exc
    if data.get("format") != RECORDS_FORMAT:
        raise CheckpointError(f"{RECORDS_FILE}: format {data.get('format')!r}, expected {RECORDS_FORMAT}")
    records = {name: record_from_dict(name, d) for name, d in data["models"].items()}
    if data["default"] not in records:
        raise CheckpointError(f"{RECORDS_FILE}: the default {data['default']!r} has no record")
    return data["default"], records


def records() -> dict[str, ModelRecord]:
    """Every shipped model's record, by name, in the file's order."""
    return dict(_records()[1])


def default_model() -> str:
    """The name ``Recognizer()``, ``predict`` and ``load_model()`` use when given none."""
    return _records()[0]


def list_models() -> list[str]:
    """The shipped models' names (``expressnet models`` shows their records)."""
    return list(_records()[1])


def get_record(name: str | None = None) -> ModelRecord:
    """The record of a shipped model (None or "default": the default one)."""
    key = shipped_name(name)
    if key is None:
        raise CheckpointError(f"{name!r} is not a shipped model (shipped: {', '.join(list_models())})")
    return _records()[1][key]


def shipped_name(name_or_path: Any) -> str | None:
    """The shipped model's name for None/"default"/a shipped name, else None (a path, a module, a classifier)."""
    if name_or_path is None or (isinstance(name_or_path, str) and name_or_path == "default"):
        return default_model()
    return name_or_path if isinstance(name_or_path, str) and name_or_path in _records()[1] else None


def shipped_models() -> dict[str, Path]:
    """Shipped name -> torch checkpoint path, for the models whose checkpoint is installed."""
    return {n: r.checkpoint_path for n, r in _records()[1].items() if r.checkpoint_path.is_file()}


def shipped_onnx(name_or_path: Any, weights: str | None = None) -> Path | None:
    """A shipped model's ONNX inference file, if it infers with one; with ``weights`` ("float32" or "int8") only
    a file of that precision."""
    name = shipped_name(name_or_path)
    if name is None:
        return None
    record = _records()[1][name]
    if record.backend != "onnx" or (weights is not None and weights != record.precision):
        return None
    return record.inference_path if record.inference_path.is_file() else None


def int8_keep_float(name_or_path: Any) -> tuple[str, ...] | None:
    """The layers an int8 export of a shipped model keeps float (its record's ``int8_keep_float``), None for the
    default ones (:data:`expressnet.runtime.onnx.KEEP_FLOAT`)."""
    name = shipped_name(name_or_path)
    return None if name is None else _records()[1][name].int8_keep_float


DATASET_NAMES = {"fer2013": "FER-2013", "ferplus": "FER+", "ferplus-majority": "FER+ (majority)", "rafdb": "RAF-DB"}
PRECISION_NAMES = {"int8": "int8 ONNX", "float32": "float32 ONNX"}


def metric_text(metric: dict[str, Any]) -> str:
    """ "71.22 % / 0.687 FER-2013 PrivateTest": accuracy / macro-F1 on a protocol."""
    data = DATASET_NAMES.get(metric["data"], metric["data"])
    return f"{100 * metric['accuracy']:.2f} % / {metric['macro_f1']:.3f} {data} {metric['split']}"


def markdown_table(chosen: list[ModelRecord] | None = None, default: str | None = None) -> str:
    """The README's models table, from the records: test figures measured on each model's inference file."""
    chosen = list(records().values()) if chosen is None else chosen
    default = default or default_model()
    lines = [
        "| name | classes | input, architecture | trained on | test accuracy / macro-F1 | inference file | for |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in chosen:
        tests = "; ".join(metric_text(m) for m in r.metrics if m.get("role") == "test") or "not measured"
        runs = PRECISION_NAMES.get(r.precision, r.precision) if r.backend == "onnx" else f"torch ({r.precision})"
        name = f"`{r.name}`" + (" (default)" if r.name == default else "")
        lines.append(f"| {name} | {len(r.classes)} | {r.architecture} | {r.trained_on} | {tests} | {runs} | {r.use} |")
    return "\n".join(lines)


def _missing(record: ModelRecord, path: Path) -> CheckpointError:
    return CheckpointError(f"{path}: shipped model {record.name!r} is missing from this installation (reinstall)")


def resolve_model(name_or_path: str | Path | None = None) -> Path:
    """The torch checkpoint of a shipped name, a file, or a training run folder (its best.safetensors)."""
    key = shipped_name(name_or_path)
    if key is not None:
        record = _records()[1][key]
        if not record.checkpoint_path.is_file():
            raise _missing(record, record.checkpoint_path)
        return record.checkpoint_path
    path = Path(str(name_or_path))
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint (shipped models: {', '.join(list_models())})")
    if path.is_dir():
        path = path / "best.safetensors"  # a training run directory
    return path


def resolve_inference(name: str | None) -> tuple[ModelRecord, Path]:
    """A shipped model's record and its installed inference file."""
    record = get_record(name)
    if not record.inference_path.is_file():
        raise _missing(record, record.inference_path)
    return record, record.inference_path


def load_model(name_or_path: str | Path | None = None, device: Any = "cpu") -> Any:
    """A torch model in eval mode with ``.class_names``, ``.preprocessing``, ``.metadata`` and ``.source``
    (needs torch: ``pip install 'expressnet[torch]'``)."""
    path = resolve_model(name_or_path)  # a name or path that is not there is said first, with or without torch
    try:
        checkpoint = importlib.import_module("expressnet.checkpoint")  # imports torch: only when asked for
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"load_model needs PyTorch: pip install 'expressnet[torch]' ({exc.name} is missing)", name=exc.name
        ) from exc
    return checkpoint.build_model(path, device)


def __getattr__(name: str) -> Any:
    """``SHIPPED`` (name -> checkpoint file), ``INT8_KEEP_FLOAT`` and ``DEFAULT``, derived from the records."""
    if name == "SHIPPED":
        return {n: r.checkpoint for n, r in records().items()}
    if name == "INT8_KEEP_FLOAT":
        return {n: r.int8_keep_float for n, r in records().items() if r.int8_keep_float is not None}
    if name == "DEFAULT":
        return default_model()
    raise AttributeError(f"module 'expressnet.hub' has no attribute {name!r}")
