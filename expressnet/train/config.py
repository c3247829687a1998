"""Training configuration: one dataclass, per-preset recipes, YAML in and out.

``expressnet train --config FILE`` reads a YAML file of these fields; flags and ``--set key=value``
override it. The fully resolved config is saved beside the checkpoints and reproduces the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..config import config_from_dict
from ..io import atomic_write_text
from .augment import AugmentConfig
from .pins import Pin, resolve_pin

LABELS = ("hard", "soft", "votes")  # the training-target builders of ``expressnet.train.loop.TARGETS``
DISTILL = ("fixed", "online")  # when the teacher labels the training images (see ``TrainConfig.distill``)


@dataclass(frozen=True)
class TrainConfig:
    # model
    preset: str = "compact"
    model: dict = field(default_factory=dict)  # ExpressNetConfig overrides, e.g. {top_k: 1}
    # the residual backbone's initial weights: a file (torchvision-style ResNet names, .safetensors or a weights-only
    # .pth), or "pretrained": a face backbone's converted weights from `expressnet fetch-backbone NAME` (the model
    # config's backbone, e.g. model: {backbone: hse-faceres})
    backbone_weights: str | None = None
    backbone_lr_scale: float = (
        1.0  # the backbone's learning rate as a share of lr (< 1 fine-tunes pretrained weights gently)
    )
    # start from an ExpressNet checkpoint (path or shipped name, or a pin: train/pins.py); classes by name
    init_from: str | Pin | None = None
    init_shrink: bool = False  # init_from a larger model of the same topology: keep its most important channels
    # init_from a model with fewer backbone blocks: the blocks it lacks start as the identity (same function)
    init_grow: bool = False
    # data
    data: str = "fer2013"  # path or known name
    data_kind: str = "auto"
    data_options: dict = field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    val_fraction: float = 0.1  # held out of train when the dataset has no validation split
    labels: str = "hard"  # "hard" | "soft" (vote distributions, FER+) | "votes" (FER-2013 blended with FER+ votes)
    votes: str = "ferplus"  # FER+ npz (path or known name) for labels="votes"
    vote_weight: float = 0.3  # share of the FER+ vote distribution in labels="votes" targets
    soft_weight: float = 1.0  # labels="soft"/teacher: share of the votes/teacher, the rest one-hot on the label
    # knowledge distillation: train on a teacher's probabilities (labels must be "hard"; blended by soft_weight)
    # shipped model name ("fer2013") or checkpoint path / run directory; a list is an ensemble whose softened
    # probabilities are averaged with equal weight
    teacher: str | Pin | tuple[str | Pin, ...] | None = None
    # teacher probabilities = softmax(logits / T). 1.0 keeps them as the teacher predicts (shipped models are
    # calibrated: their temperature is folded in); T > 1 softens them, showing more of the teacher's runner-up classes
    distill_temperature: float = 1.0
    # "fixed": the teacher labels each un-augmented training image once, before the first epoch (cheap);
    # "online": it labels every batch as the student sees it, augmented and mixed (consistent targets, whatever
    # the augmentation; costs a teacher forward pass per step)
    distill: str = "fixed"
    # distill=online: the teachers' runtime backend, "torch" | "onnx" | "auto" (on a CPU the teacher's ONNX file when
    # it has one, else torch; decided without timing, so a resumed run gets the same targets)
    teacher_backend: str = "auto"
    train_limit: int | None = None  # use a seeded stratified subset of this many training images
    val_limit: int | None = None
    test_limit: int | None = None  # for smoke tests only; reports say n
    # optimisation
    epochs: int = 60
    batch_size: int = 64
    optimizer: str = "sgd"  # "sgd" | "adam" | "adamw"
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"  # "cosine" | "exponential" | "constant"
    lr_decay: float = 0.95  # per epoch, for "exponential"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    class_weights: str = "none"  # "none" | "inverse" | "sqrt-inverse"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mixup: float = 0.0  # Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0
    ema_decay: float = 0.0  # exponential moving average of weights; 0 = off
    early_stopping_patience: int | None = None  # epochs without validation-loss improvement
    tta_flip: bool = False  # evaluate with flip averaging (and ship it in the predictor)
    test_ablation: bool = True  # drop-one-expert ablation in the end-of-run test report (one pass per expert)
    # runtime
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16" (autocast)
    channels_last: bool = False
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    threads: int | None = None  # torch CPU threads
    seed: int = 0
    deterministic: bool = False  # deterministic GPU kernels (slower); CPU runs are deterministic anyway
    epoch_changes: list = field(default_factory=list)  # [{after_epoch, from, to}] set by `train --resume --epochs`
    eval_batch_size: int = 256
    max_steps_per_epoch: int | None = None  # cut epochs short (smoke tests)
    out: str = "runs/expressnet"
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.labels not in LABELS:
            raise ValueError(f"labels must be {', '.join(LABELS[:-1])} or {LABELS[-1]}, not {self.labels!r}")
        if not 0 <= self.soft_weight <= 1:
            raise ValueError(f"soft_weight must be in [0, 1], not {self.soft_weight}")
        if self.teacher is not None and self.labels != "hard":
            raise ValueError(f"a teacher replaces the labels' targets: use labels=hard with it, not {self.labels!r}")
        if isinstance(self.teacher, tuple) and not (
            self.teacher and all(isinstance(t, (str, Pin)) for t in self.teacher)
        ):
            raise ValueError(f"teacher must be a model name or path, or a non-empty list of them, not {self.teacher!r}")
        if self.distill not in DISTILL:
            raise ValueError(f"distill must be {' or '.join(DISTILL)}, not {self.distill!r}")
        if self.distill == "online" and self.teacher is None:
            raise ValueError("distill=online needs a teacher")
        if (self.init_shrink or self.init_grow) and not self.init_from:
            raise ValueError("init_shrink and init_grow need init_from (the checkpoint to start from)")
        if self.init_shrink and self.init_grow:
            raise ValueError("init_shrink and init_grow exclude each other: a model is shrunk or grown, not both")
        if not 0 < self.backbone_lr_scale <= 1:
            raise ValueError(f"backbone_lr_scale must be in (0, 1], not {self.backbone_lr_scale}")
        if self.distill_temperature <= 0:
            raise ValueError(f"distill_temperature must be positive, not {self.distill_temperature}")

    @property
    def teachers(self) -> tuple[str, ...]:
        """The teacher models, one or several (an ensemble), pins checked and resolved (:func:`resolve_pin`);
        empty without distillation."""
        if self.teacher is None:
            return ()
        return tuple(resolve_pin(t) for t in (self.teacher if isinstance(self.teacher, tuple) else (self.teacher,)))

    @property
    def init_model(self) -> str | None:
        """``init_from``, its pin checked and resolved."""
        return None if self.init_from is None else resolve_pin(self.init_from)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples as lists), as YAML writes them; :meth:`from_dict` reads them back."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return config_from_dict(cls, data, "training config")

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(read_config_file(path))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# The paper's recipe (paper.md): Adam 1e-4, label smoothing 0.1, batch 32, 15 epochs, LR x0.95 per epoch,
# early stopping with patience 5 on validation loss, keep the best validation accuracy, no augmentation.
PAPER_RECIPE = TrainConfig(
    preset="paper",
    epochs=15,
    batch_size=32,
    optimizer="adam",
    lr=1e-4,
    weight_decay=0.0,
    schedule="exponential",
    lr_decay=0.95,
    warmup_epochs=0.0,
    label_smoothing=0.1,
    early_stopping_patience=5,
)

# Our recipe for the compact presets: SGD + Nesterov, cosine with warm-up, label smoothing, geometric and
# photometric augmentation with random erasing, weight EMA, flip averaging, bf16 autocast, channels-last.
COMPACT_RECIPE = TrainConfig(
    preset="compact",
    epochs=60,
    batch_size=64,
    optimizer="sgd",
    lr=0.05,
    weight_decay=5e-4,
    momentum=0.9,
    schedule="cosine",
    warmup_epochs=1.0,
    label_smoothing=0.1,
    augment=AugmentConfig(flip=0.5, rotate=15, scale=0.12, translate=0.1, brightness=0.2, contrast=0.25, erase=0.5),
    ema_decay=0.999,
    tta_flip=True,
    precision="bf16",
    channels_last=True,
)


def recipe(preset: str) -> TrainConfig:
    """Default training config for a preset: the paper recipe for ``paper``, ours for the rest."""
    base = PAPER_RECIPE if preset == "paper" else COMPACT_RECIPE
    return replace(base, preset=preset)


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Override fields; dotted keys reach into ``augment``/``model``/``data_options`` (``augment.rotate=10``)."""
    data = cfg.to_dict()
    for key, value in overrides.items():
        target = data
        *parents, leaf = key.split(".")
        for p in parents:
            if not isinstance(target.get(p), dict):
                raise ValueError(f"cannot set {key!r}: {p!r} is not a group of settings")
            target = target[p]
        if not parents and leaf not in data:
            raise ValueError(f"unknown training config key {key!r}")
        target[leaf] = value
    return TrainConfig.from_dict(data)


GROUPS = ("augment", "model", "data_options")  # what a config's ``base`` merges key by key; any other value is replaced


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The fields of a YAML training config. ``base: other.yaml`` (relative to the file) starts from another
    config's fields; the file's own fields override them, group by group for ``augment``/``model``/``data_options``."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ValueError(f"{path}: config bases form a cycle ({' -> '.join(p.name for p in (*_seen, path))})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read config ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a training config must be a mapping of fields")
    base = data.pop("base", None)
    if base is None:
        return data
    merged = read_config_file(path.parent / base, (*_seen, path.resolve()))
    for key, value in data.items():
        both_groups = key in GROUPS and isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = {**merged[key], **value} if both_groups else value
    return merged


def config_from_file(path: str | Path | None, preset: str | None = None) -> TrainConfig:
    """The training config a YAML file describes: the recipe of its preset (``preset`` if given, else the
    file's, else ``compact``) with the file's fields (bases resolved) applied on top."""
    values = read_config_file(path) if path is not None else {}
    chosen = preset or values.get("preset") or "compact"
    return apply_overrides(recipe(chosen), {**values, "preset": chosen})


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["a=1", "augment.rotate=10.5", "model={top_k: 1}"]`` -> values parsed as YAML scalars/maps."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
