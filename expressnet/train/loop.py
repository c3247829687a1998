"""The training loop, top to bottom: data -> model -> epochs (train, validate, checkpoint) -> one test.

    run(cfg)                      guards (--resume, --epochs, an existing run), devices, process group
      open_dataset(cfg)           the dataset and its splits; validation never overlaps the test split
      new_model(cfg, classes)     the model (optionally from another checkpoint's weights)
      load_data(cfg, ...)         prepared tensors; training targets from TARGETS[cfg.labels] (or the teacher)
      online_teacher(cfg, ...)    with distill=online: the teachers that label each augmented batch instead
      build_training(cfg, ...)    optimizer, schedule, scaler, EMA, class weights, and the state --resume restores
      train_one_epoch(...)        seeded shuffling, augmentation, mixing, optimizer steps
      end_of_epoch(...)           validation, history row, best/last checkpoints, state.pt; early stopping
      final_test(...)             the test split, once, with the best checkpoint, on the training device

Determinism: every epoch's shuffling, augmentation and dropout draw from generators seeded by
(seed, epoch), so a run resumed after its last completed epoch finishes exactly like an uninterrupted one.
Validation never touches the test split; the test split is evaluated once, with the best checkpoint.

Chosen by name (``expressnet.registry.Registry``): ``OPTIMIZERS``, ``SCHEDULES``, ``CLASS_WEIGHTS`` and
``TARGETS`` (how a training split becomes its targets: ``hard``, ``soft``, ``votes``, ``teacher``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..checkpoint import build_model, load_checkpoint, save_checkpoint
from ..data import Dataset, Prepared, Preprocessing, load_dataset, match_classes, prepare_split, stratified_indices
from ..data.base import DataError, Split
from ..data.ferplus import with_vote_targets
from ..data.registry import resolve
from ..evaluate.core import evaluate_prepared
from ..evaluate.report import write_report
from ..hub import load_model, resolve_model
from ..io import atomic_write, cache_root, file_sha256
from ..nn import ExpressNetConfig, ExpressNetMoE, create_model, get_config
from ..nn.backbones.resnet import make_identity, residual_blocks
from ..nn.shrink import shrink_state
from ..pretrained import backbone_weights
from ..registry import Registry
from ..runtime.batched import autocast, predict_logits, to_float
from ..runtime.classifier import Classifier, available_backends, load_classifier
from ..version import __version__
from .augment import augment, mix
from .config import TrainConfig
from .distributed import DistInfo, convert_sync_batchnorm, init_distributed, pick_device, shutdown
from .ema import EMA
from .logging import RunLogger

console = Console(soft_wrap=True)

# ---- chosen by name ------------------------------------------------------------------------------------

OPTIMIZERS: Registry[Callable[[list[dict], TrainConfig], torch.optim.Optimizer]] = Registry("optimizer")
# name -> (cfg, warmup steps, total steps, steps per epoch) -> LR multiplier at step s (after the warm-up)
SCHEDULES: Registry[Callable[[TrainConfig, int, int, int], Callable[[int], float]]] = Registry("schedule")
CLASS_WEIGHTS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("class weighting")
# name -> (cfg, training split, TargetContext) -> the prepared split with its training targets in soft_labels
TARGETS: Registry[Callable[[TrainConfig, Split, TargetContext], Prepared]] = Registry("training targets")


@OPTIMIZERS.register("sgd")
def sgd(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


@OPTIMIZERS.register("adam")
def adam(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=cfg.lr)


@OPTIMIZERS.register("adamw")
def adamw(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr)


@SCHEDULES.register("cosine")
def cosine(cfg: TrainConfig, warmup: int, total: int, steps_per_epoch: int) -> Callable[[int], float]:
    return lambda s: 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(total - warmup, 1)))


@SCHEDULES.register("exponential")
def exponential(cfg: TrainConfig, warmup: int, total: int, steps_per_epoch: int) -> Callable[[int], float]:
    return lambda s: cfg.lr_decay ** (s // steps_per_epoch)  # per epoch, counted from step 0


@SCHEDULES.register("constant")
def constant(cfg: TrainConfig, warmup: int, total: int, steps_per_epoch: int) -> Callable[[int], float]:
    return lambda s: 1.0


CLASS_WEIGHTS.register("inverse", lambda counts: 1 / counts)
CLASS_WEIGHTS.register("sqrt-inverse", lambda counts: counts.rsqrt())


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step ``s`` (linear warm-up, then the schedule)."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    after_warmup = SCHEDULES.get(cfg.schedule)(cfg, warmup, total, steps_per_epoch)
    return lambda s: (s + 1) / warmup if s < warmup else after_warmup(s)


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Parameter groups: weight decay except on biases and norms; the backbone's at ``backbone_lr_scale`` x lr
    (the schedule multiplies each group's ``initial_lr``)."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        groups.setdefault((p.ndim > 1, name.startswith("backbone.")), []).append(p)
    return OPTIMIZERS.get(cfg.optimizer)(
        [
            {
                "params": params,
                "weight_decay": cfg.weight_decay if decay else 0.0,
                "lr": cfg.lr * (cfg.backbone_lr_scale if backbone else 1.0),
            }
            for (decay, backbone), params in sorted(groups.items())
        ],
        cfg,
    )


def class_weight_vector(cfg: TrainConfig, labels: torch.Tensor, k: int) -> torch.Tensor | None:
    if cfg.class_weights == "none":
        return None
    counts = torch.bincount(labels, minlength=k).float().clamp_min(1)
    w = CLASS_WEIGHTS.get(cfg.class_weights)(counts)
    return w * k / w.sum()


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy against target distributions (N, K); ``weights`` weight each sample by its target class mix."""
    loss = -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    if weights is not None:
        w = target @ weights.to(target)
        return (loss * w).sum() / w.sum()
    return loss.mean()


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + stream)


# ---- run: guards, devices, process group ---------------------------------------------------------------


def run(
    cfg: TrainConfig,
    resume: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    epochs: int | None = None,
) -> dict:
    """Train as ``cfg`` says; returns the summary written to ``<out>/summary.json``.

    ``resume`` continues the run in ``cfg.out`` from its last completed epoch (its saved config wins).
    ``epochs`` (resume only) changes the run's total; the learning-rate schedule is recomputed for the new total
    from the current step on, and the change is recorded in ``config.yaml`` under ``epoch_changes``.
    ``on_step(epoch, step)`` is called after every optimizer step (progress hooks, tests).
    """
    out = Path(cfg.out)
    if resume:
        saved = out / "config.yaml"
        if not (saved.is_file() and (out / "state.pt").is_file()):
            raise FileNotFoundError(f"{out}: nothing to resume (needs config.yaml and state.pt)")
        cfg = TrainConfig.load(saved)
        if epochs is not None and epochs != cfg.epochs:
            done = json.loads((out / "last.json").read_text())["epoch"] if (out / "last.json").is_file() else 0
            if epochs <= done:
                raise ValueError(f"{out}: --epochs {epochs} must exceed the {done} epochs already completed")
            change = {"after_epoch": done, "from": cfg.epochs, "to": epochs}
            cfg = replace(cfg, epochs=epochs, epoch_changes=[*cfg.epoch_changes, change])
    elif epochs is not None:
        raise ValueError("epochs= is only for resume; set cfg.epochs for a new run")
    elif (out / "state.pt").exists():
        raise FileExistsError(f"{out}: a run already exists here; pass --resume to continue it or choose another --out")
    device = pick_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    info = init_distributed(device)
    try:
        return _train(cfg, resume, on_step, device, info)
    finally:
        shutdown(info)


def _train(cfg: TrainConfig, resume: bool, on_step, device: torch.device, info: DistInfo) -> dict:
    out = Path(cfg.out)
    set_up_torch(cfg)
    say = console.print if info.is_main else (lambda *a, **k: None)

    dataset = open_dataset(cfg)
    model = new_model(cfg, dataset.class_names, say)
    pre = Preprocessing(model.config.input_size, model.config.in_channels)
    train, val = load_data(cfg, dataset, pre, device, info.is_main)
    skipped = len(train.skipped) + len(val.skipped)
    say(
        f"[bold]data[/] {dataset.name}: train {len(train):,} ({cfg.train_split}), val {len(val):,} ({cfg.val_split}), "
        f"classes {', '.join(dataset.class_names)}; skipped {skipped} unreadable/filtered"
    )

    teacher = online_teacher(cfg, dataset.class_names, pre, device)
    if teacher is not None:
        say(f"[bold]online teacher[/] {', '.join(f'{c.source} ({c.backend})' for c in teacher.classifiers)}")
    training = build_training(cfg, model, train, device, info)
    if resume:
        training.load_resume_state(torch.load(out / "state.pt", map_location=device, weights_only=True))
        say(f"[bold]resuming[/] {out} after epoch {training.state.epoch}")
    logger = RunLogger(out, cfg, enabled=info.is_main, history=training.state.history)
    metadata = checkpoint_metadata(cfg, model, dataset, pre, train, val)

    for epoch in range(training.state.epoch, cfg.epochs):
        totals = train_one_epoch(cfg, training, train, epoch, device, info, logger, on_step, teacher)
        if end_of_epoch(cfg, training, val, epoch, totals, metadata, logger, info, say):
            break
        if info.enabled:
            torch.distributed.barrier()

    state = training.state
    summary = {"best_epoch": state.best_epoch, "best_val_accuracy": state.best_val_accuracy, "epochs_run": state.epoch}
    if info.is_main:
        summary.update(final_test(cfg, dataset, pre, out, device))
        logger.finish(summary)
    return summary


def set_up_torch(cfg: TrainConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(cfg.seed)


# ---- data ----------------------------------------------------------------------------------------------


def open_dataset(cfg: TrainConfig) -> Dataset:
    """The dataset ``cfg`` names, with a validation split held out of train if it has none and ``val_split``
    asks for "val"; ``DataError`` if the validation split overlaps the test split."""
    dataset = load_dataset(cfg.data, cfg.data_kind, **cfg.data_options)
    if "val" not in dataset.roles and cfg.val_split == "val":
        dataset = dataset.with_validation_from_train(cfg.val_fraction, cfg.seed)
    val_names, test_names = (set(dataset.split_names(x)) for x in (cfg.val_split, cfg.test_split))
    if val_names & test_names:
        raise DataError(
            f"validation split {cfg.val_split!r} overlaps the test split {cfg.test_split!r}; choose another"
        )
    return dataset


def limit_split(split: Split, n: int | None, seed: int) -> Split:
    """A seeded stratified subset of ``n`` images (all of them when ``n`` is None or large)."""
    if n is None or n >= len(split):
        return split
    _, keep = stratified_indices(split.labels, n / len(split), seed)
    return split.subset(keep)


@dataclass(frozen=True)
class TargetContext:
    """What a target builder may need besides the config and the split."""

    dataset: Dataset
    pre: Preprocessing  # the student's input preprocessing
    device: torch.device  # where a teacher runs
    progress: bool = True


def target_kind(cfg: TrainConfig) -> str:
    """The ``TARGETS`` entry ``cfg`` asks for: "teacher" when distilling with fixed targets, else ``cfg.labels``
    (online distillation blends the teacher in per batch, on top of these)."""
    return "teacher" if cfg.teacher and cfg.distill == "fixed" else cfg.labels


def load_data(
    cfg: TrainConfig, dataset: Dataset, pre: Preprocessing, device: torch.device, progress: bool = True
) -> tuple[Prepared, Prepared]:
    """The training split prepared with its targets (``soft_labels``, (N, K)) and the validation split."""
    ctx = TargetContext(dataset, pre, device, progress)
    train_split = limit_split(dataset.split(cfg.train_split), cfg.train_limit, cfg.seed)
    train = TARGETS.get(target_kind(cfg))(cfg, train_split, ctx)
    val = prepare_split(limit_split(dataset.split(cfg.val_split), cfg.val_limit, cfg.seed), pre, progress)
    return train, val


def one_hot(data: Prepared) -> torch.Tensor:
    return F.one_hot(data.labels, len(data.class_names)).float()


def blend_majority(data: Prepared, soft_weight: float) -> Prepared:
    """``data`` with soft labels ``soft_weight * votes + (1 - soft_weight) * one-hot(majority label)``."""
    if soft_weight == 1:
        return data
    majority = one_hot(data).to(data.soft_labels.dtype)
    return replace(data, soft_labels=soft_weight * data.soft_labels + (1 - soft_weight) * majority)


@TARGETS.register("hard")
def hard_targets(cfg: TrainConfig, split: Split, ctx: TargetContext) -> Prepared:
    """One-hot labels."""
    data = prepare_split(split, ctx.pre, ctx.progress)
    return replace(data, soft_labels=one_hot(data))


@TARGETS.register("soft")
def vote_distribution_targets(cfg: TrainConfig, split: Split, ctx: TargetContext) -> Prepared:
    """The dataset's vote distributions (FER+), blended with the majority label by ``soft_weight``."""
    data = prepare_split(split, ctx.pre, ctx.progress)
    if data.soft_labels is None:
        raise DataError(f"{cfg.data}: labels=soft needs vote distributions, which this dataset does not have")
    return blend_majority(data, cfg.soft_weight)


@TARGETS.register("votes")
def ferplus_vote_targets(cfg: TrainConfig, split: Split, ctx: TargetContext) -> Prepared:
    """FER-2013 labels blended with the FER+ votes (``cfg.votes``) for the same images, by ``vote_weight``."""
    root = ctx.dataset.root
    fer2013_npz = root if root.endswith(".npz") else resolve("fer2013")
    split = with_vote_targets(split, fer2013_npz, resolve(cfg.votes), cfg.vote_weight)
    return prepare_split(split, ctx.pre, ctx.progress)


@TARGETS.register("teacher")
def teacher_targets(cfg: TrainConfig, split: Split, ctx: TargetContext) -> Prepared:
    """Knowledge distillation: ``soft_weight * p + (1 - soft_weight) * one-hot(label)``, where ``p`` is
    ``softmax(teacher logits / distill_temperature)``, averaged over the teachers when ``cfg.teacher`` lists
    several (an ensemble). Each teacher sees the un-augmented training images, prepared with its own
    preprocessing when that differs from the student's, once, before the first epoch, with its own flip
    averaging (logits cached: :func:`teacher_logits`). Classes are matched by name; teacher classes the student
    lacks are left out of the softmax."""
    data = prepare_split(split, ctx.pre, ctx.progress)
    total = torch.zeros(len(data), len(data.class_names))
    for name in cfg.teachers:
        teacher = load_model(name, ctx.device)
        columns = teacher_columns(name, data.class_names, teacher.class_names)
        images = data.images
        if not same_input(teacher.preprocessing, ctx.pre):
            own = prepare_split(split, teacher.preprocessing, ctx.progress)
            if own.sources != data.sources:
                raise DataError(f"{cfg.data}: some training images are readable at one input size but not the other")
            images = own.images
        total += softened(teacher_logits(teacher, images, cfg), columns, cfg.distill_temperature)
    probabilities = total / len(cfg.teachers)
    return blend_majority(replace(data, soft_labels=probabilities), cfg.soft_weight)


def teacher_logits(teacher: torch.nn.Module, images: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """The teacher's logits for the un-augmented training images (flip averaging as its metadata says, in the
    run's precision), cached under ``$EXPRESSNET_CACHE/teacher-logits`` (as the ONNX exports: beside the
    detector cache), keyed by the teacher file's sha256, the images' bytes and everything else the logits depend
    on, so later runs with the same teacher and images (another seed, schedule or student) skip that pass."""
    tta_flip = bool(teacher.metadata.get("tta_flip", False))
    key = {
        "teacher": file_sha256(teacher.source),
        "images": hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest(),
        "shape": list(images.shape),
        "tta_flip": tta_flip,
        "precision": cfg.precision,
        "batch_size": cfg.eval_batch_size,
        "versions": [__version__, torch.__version__],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_root() / "teacher-logits" / f"{digest}.safetensors"
    if path.is_file():
        try:
            cached = load_file(str(path))["logits"]
            if cached.shape[0] == len(images):
                return cached
        except (SafetensorError, OSError, KeyError):
            pass  # unreadable or foreign: computed again and replaced
    logits = predict_logits(teacher, images, cfg.eval_batch_size, tta_flip=tta_flip, precision=cfg.precision)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file({"logits": logits.float().contiguous()}, tmp))
    return logits


def teacher_columns(name: str, student: tuple[str, ...], teacher: tuple[str, ...]) -> list[int]:
    """For each of the student's classes, its column in the teacher's output (matched by name); ``DataError``
    naming the teacher when it lacks one."""
    columns = match_classes(student, teacher)
    missing = [c for c, j in zip(student, columns) if j is None]
    if missing:
        raise DataError(f"teacher {name}: predicts {teacher}, not the classes {missing}")
    return columns


def softened(logits: torch.Tensor, columns: Sequence[int], temperature: float) -> torch.Tensor:
    """A teacher's probabilities over the student's classes: ``softmax(logits[:, columns] / temperature)``."""
    return torch.softmax(logits[:, list(columns)] / temperature, dim=1)


@dataclass(frozen=True)
class OnlineTeacher:
    """``distill: online``: teachers that label each training batch as the student sees it (augmented, mixed).
    ``probabilities(x)`` is the mean over the teachers of ``softmax(logits / temperature)``, each teacher a runtime
    :class:`Classifier` (its own flip averaging) fed ``x`` as uint8 crops; ``columns`` map the student's classes to
    each teacher's."""

    classifiers: tuple[Classifier, ...]
    columns: tuple[tuple[int, ...], ...]
    temperature: float

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        crops = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        total = torch.zeros(len(x), len(self.columns[0]))
        for classifier, columns in zip(self.classifiers, self.columns):
            total += softened(torch.from_numpy(classifier.logits(crops)), columns, self.temperature)
        return total / len(self.classifiers)


def online_teacher(
    cfg: TrainConfig, class_names: tuple[str, ...], pre: Preprocessing, device: torch.device
) -> OnlineTeacher | None:
    """The teachers of ``distill: online`` (None otherwise), in fp32 on :func:`teacher_backend`. They see the
    student's own inputs, so each must take the same input size and channels."""
    if cfg.distill != "online":
        return None
    classifiers, columns = [], []
    for name in cfg.teachers:
        backend = teacher_backend(cfg.teacher_backend, name, device)
        classifier = load_classifier(name, backend, device=device, threads=cfg.threads, batch_size=cfg.batch_size)
        if not same_input(classifier.preprocessing, pre):
            raise DataError(
                f"teacher {name}: takes {classifier.preprocessing.input_size} px x {classifier.preprocessing.channels} "
                f"channels, the student {pre.input_size} px x {pre.channels}; online distillation feeds the "
                "teacher the student's inputs, so use distill: fixed for this teacher"
            )
        classifiers.append(classifier)
        columns.append(tuple(teacher_columns(name, class_names, classifier.class_names)))
    return OnlineTeacher(tuple(classifiers), tuple(columns), cfg.distill_temperature)


def teacher_backend(choice: str, teacher: str, device: torch.device) -> str:
    """The runtime backend of an online teacher. "auto" is decided without timing, so that a resumed run (or
    every rank) gets the same targets: on a CPU the teacher's ONNX file when it has one (a shipped model's int8
    file, or an ``.onnx`` path), else torch."""
    if choice != "auto":
        return choice
    return "onnx" if device.type == "cpu" and "onnx" in available_backends(teacher) else "torch"


def same_input(a: Preprocessing, b: Preprocessing) -> bool:
    """Whether ``prepare_split`` makes the same tensors with ``a`` as with ``b``."""
    return (a.input_size, a.channels, a.interpolation) == (b.input_size, b.channels, b.interpolation)


# ---- model, optimizer, schedule, resume state ----------------------------------------------------------


def new_model(cfg: TrainConfig, class_names: tuple[str, ...], say: Callable[..., None]) -> ExpressNetMoE:
    weights = cfg.backbone_weights
    if weights == "pretrained":
        weights = backbone_weights(str(get_config(cfg.preset, **cfg.model).backbone))
    model = create_model(cfg.preset, num_classes=len(class_names), backbone_weights=weights, **cfg.model)
    if cfg.backbone_weights:
        say(f"[bold]backbone[/] initialised from {weights}")
    if cfg.init_from:
        described = init_from_checkpoint(model, cfg.init_model, class_names, shrink=cfg.init_shrink, grow=cfg.init_grow)
        say(f"[bold]init[/] {described}")
    return model


def init_from_checkpoint(
    model: ExpressNetMoE, source: str, class_names: tuple[str, ...], shrink: bool = False, grow: bool = False
) -> str:
    """Copy a checkpoint's weights into ``model``; classifier rows are matched by canonical class name
    (classes the checkpoint lacks keep their fresh initialisation). With ``shrink``, the checkpoint may be a larger
    model of the same topology: its most important channels and first blocks are kept (:func:`shrink_state`).
    With ``grow``, it may lack whole backbone blocks (identity shortcuts) that ``model`` has: those start as the
    identity (:func:`make_identity`), so the model computes what the checkpoint did. Returns a one-line
    description."""
    path = resolve_model(source)
    state, meta = load_checkpoint(path)
    if shrink:
        state = shrink_state(state, ExpressNetConfig.from_dict(meta["model_config"], str(path)), model.config)
    added = {}
    if grow:
        blocks = {f"backbone.{name}.": block for name, block in residual_blocks(model.backbone).items()}
        added = {prefix: block for prefix, block in blocks.items() if not any(k.startswith(prefix) for k in state)}
    own = model.state_dict()
    head = {k for k in state if k.startswith("head.")}
    body = {k: v for k, v in state.items() if k not in head}
    missing = sorted(k for k in set(own) - set(state) if not k.startswith(tuple(added)))
    mismatched = [k for k, v in body.items() if k not in own or own[k].shape != v.shape] + missing
    if mismatched:
        raise ValueError(f"{path}: weights do not fit this model's architecture (first mismatch: {mismatched[0]})")
    model.load_state_dict({**own, **body})
    for prefix, block in added.items():
        try:
            make_identity(block)
        except ValueError as exc:
            raise ValueError(f"{path}: cannot grow {prefix.rstrip('.')}: {exc}") from exc
    rows = [(i, j) for i, j in enumerate(match_classes(class_names, meta["class_names"])) if j is not None]
    with torch.no_grad():
        for i, j in rows:
            model.head.weight[i] = state["head.weight"][j]
            model.head.bias[i] = state["head.bias"][j]
    how = "shrunk weights" if shrink else "weights"
    grown = f" and {len(added)} new identity blocks ({', '.join(p.rstrip('.') for p in added)})" if added else ""
    return f"{how} from {path}{grown}; classifier rows for {len(rows)}/{len(class_names)} classes matched by name"


@dataclass
class TrainState:
    """What --resume restores besides weights, optimizer and scheduler."""

    epoch: int = 0  # epochs completed
    best_val_accuracy: float = -1.0
    best_epoch: int = -1
    best_val_loss: float = math.inf
    epochs_without_improvement: int = 0
    history: list[dict] = field(default_factory=list)


@dataclass
class Training:
    """Everything an optimizer step changes, and what ``state.pt`` saves for --resume."""

    model: ExpressNetMoE
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    ema: EMA | None
    class_weights: torch.Tensor | None
    steps_per_epoch: int
    state: TrainState = field(default_factory=TrainState)

    @property
    def eval_model(self) -> ExpressNetMoE:
        """What is validated and saved: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def resume_state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "state": self.state.__dict__,
        }

    def load_resume_state(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
        self.state = TrainState(**saved["state"])


def build_training(
    cfg: TrainConfig, model: ExpressNetMoE, train: Prepared, device: torch.device, info: DistInfo
) -> Training:
    """The model on ``device`` (wrapped for data parallelism), optimizer, LR schedule, scaler, EMA, class weights."""
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net: torch.nn.Module = model
    if info.enabled:
        convert_sync_batchnorm(model, device)
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.batch_size % info.world_size:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by {info.world_size} processes")
    steps_per_epoch = len(train) // cfg.batch_size
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise DataError(f"{cfg.data}: {len(train)} training images are fewer than one batch of {cfg.batch_size}")
    optimizer = make_optimizer(cfg, model)
    return Training(
        model=model,
        net=net,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch)),
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"),
        ema=EMA(model, cfg.ema_decay) if cfg.ema_decay else None,
        class_weights=class_weight_vector(cfg, train.labels, len(train.class_names)),
        steps_per_epoch=steps_per_epoch,
    )


def checkpoint_metadata(
    cfg: TrainConfig, model: ExpressNetMoE, dataset: Dataset, pre: Preprocessing, train: Prepared, val: Prepared
) -> dict:
    """What every checkpoint of the run carries (the epoch and its metrics are added per checkpoint)."""
    train_config = cfg.to_dict()
    if cfg.teacher:
        digests = [file_sha256(resolve_model(t)) for t in cfg.teachers]
        train_config["teacher_sha256"] = digests if isinstance(cfg.teacher, tuple) else digests[0]
    if cfg.init_from:
        train_config["init_sha256"] = file_sha256(resolve_model(cfg.init_model))
    return {
        "package_version": __version__,
        "preset": cfg.preset,
        "model_config": model.config.to_dict(),
        "class_names": list(dataset.class_names),
        "preprocessing": pre.to_dict(),
        "tta_flip": cfg.tta_flip,
        "train_config": train_config,
        "data": {"name": dataset.name, "source": str(cfg.data), "train": train.fingerprint, "val": val.fingerprint},
    }


# ---- one epoch -----------------------------------------------------------------------------------------


def train_step(
    cfg: TrainConfig, t: Training, x: torch.Tensor, target: torch.Tensor, hard: torch.Tensor, device: torch.device
) -> tuple[float, int]:
    """One optimizer step on a batch (soft targets, label smoothing applied): the batch's mean loss and the number
    of its images whose top class is the hard label."""
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, cfg.precision):
        logits = t.net(x)
        loss = soft_cross_entropy(logits, target, t.class_weights) + t.model.aux_loss().to(device)
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(loss).backward()
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.scheduler.step()
    if t.ema is not None:
        t.ema.update(t.model)
    with torch.no_grad():
        return loss.item(), int((logits.argmax(1) == hard).sum().item())


def train_one_epoch(
    cfg: TrainConfig,
    t: Training,
    train: Prepared,
    epoch: int,
    device: torch.device,
    info: DistInfo,
    logger: RunLogger,
    on_step: Callable[[int, int], None] | None,
    teacher: OnlineTeacher | None = None,
) -> dict:
    """One pass over ``t.steps_per_epoch`` global batches; returns the epoch's training loss, accuracy, speed.

    Every rank draws the same order and augmentation for the whole global batch and trains on its share. An
    online ``teacher`` labels each rank's share as augmented and mixed: ``soft_weight`` of the target is its
    probabilities, the rest the (mixed) labels."""
    t.net.train()
    torch.manual_seed(cfg.seed * 1_000_003 + epoch * 101 + 7 + 9973 * info.rank)  # dropout, noisy gating
    order = torch.randperm(len(train), generator=epoch_generator(cfg.seed, epoch, 0))
    aug_gen = epoch_generator(cfg.seed, epoch, 1)
    k = len(train.class_names)
    share = cfg.batch_size // info.world_size
    shard = slice(info.rank * share, (info.rank + 1) * share)
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    start = time.perf_counter()
    with logger.progress(f"epoch {epoch + 1}/{cfg.epochs}", t.steps_per_epoch) as advance:
        for step in range(t.steps_per_epoch):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x, target, hard = to_float(train.images[idx]), train.soft_labels[idx], train.labels[idx]
            x = augment(x, cfg.augment, aug_gen)
            x, target = mix(x, target, cfg.mixup, cfg.cutmix, aug_gen)
            x, target, hard = x[shard], target[shard], hard[shard]
            if teacher is not None:
                target = cfg.soft_weight * teacher.probabilities(x) + (1 - cfg.soft_weight) * target
            target = target * (1 - cfg.label_smoothing) + cfg.label_smoothing / k
            loss, correct = train_step(cfg, t, x.to(device), target.to(device), hard.to(device), device)
            totals += torch.tensor([loss * len(x), correct, len(x)], dtype=torch.float64)
            advance(
                loss=loss,
                acc=float(totals[1] / totals[2]),
                ips=totals[2].item() * info.world_size / (time.perf_counter() - start),
            )
            if on_step is not None:
                on_step(epoch, step)
    if info.enabled:
        torch.distributed.all_reduce(totals)
    seconds = time.perf_counter() - start
    return {
        "train_loss": float(totals[0] / totals[2]),
        "train_accuracy": float(totals[1] / totals[2]),
        "images_per_s": float(totals[2]) / seconds,
        "epoch_seconds": seconds,
    }


def end_of_epoch(
    cfg: TrainConfig,
    t: Training,
    val: Prepared,
    epoch: int,
    train_metrics: dict,
    metadata: dict,
    logger: RunLogger,
    info: DistInfo,
    say: Callable[..., None],
) -> bool:
    """Validate, record the history row, write best/last checkpoints and state.pt (main process); returns
    whether to stop early."""
    val_metrics = evaluate_prepared(t.eval_model, val, cfg.tta_flip, cfg.eval_batch_size, cfg.precision)
    row = {
        "epoch": epoch + 1,
        "lr": t.optimizer.param_groups[0]["lr"],
        "train_loss": train_metrics["train_loss"],
        "train_accuracy": train_metrics["train_accuracy"],
        "val_loss": val_metrics["nll"],
        "val_accuracy": val_metrics["accuracy"],
        "val_macro_f1": val_metrics["macro_f1"],
        "images_per_s": train_metrics["images_per_s"],
        "epoch_seconds": train_metrics["epoch_seconds"],
    }
    for block, r in val_metrics["routing"].items():
        row[f"moe_{block}_utilization_entropy"] = r["utilization_entropy"]
        row[f"moe_{block}_gate_entropy"] = r["mean_gate_entropy"]
        for e, load in enumerate(r["load_topk"]):
            row[f"moe_{block}_load_{e}"] = load
    state = t.state
    state.history.append(row)
    improved = row["val_accuracy"] > state.best_val_accuracy
    if improved:
        state.best_val_accuracy, state.best_epoch = row["val_accuracy"], epoch + 1
    if row["val_loss"] < state.best_val_loss:
        state.best_val_loss, state.epochs_without_improvement = row["val_loss"], 0
    else:
        state.epochs_without_improvement += 1
    state.epoch = epoch + 1
    if info.is_main:
        out = Path(cfg.out)
        meta = {**metadata, "epoch": epoch + 1, "metrics": {"val": _brief(val_metrics)}}
        if improved:
            save_checkpoint(out / "best.safetensors", t.eval_model.state_dict(), meta)
        save_checkpoint(out / "last.safetensors", t.eval_model.state_dict(), meta)
        atomic_write(out / "state.pt", lambda tmp, payload=t.resume_state(): torch.save(payload, tmp))
        logger.epoch(row, val_metrics["routing"])
    say(
        f"epoch {epoch + 1:>3}  loss {row['train_loss']:.4f}  train acc {row['train_accuracy']:.4f}  "
        f"val loss {row['val_loss']:.4f}  val acc {row['val_accuracy']:.4f}  "
        f"val macro-F1 {row['val_macro_f1']:.4f}  {row['images_per_s']:.0f} img/s{'  *best*' if improved else ''}"
    )
    patience = cfg.early_stopping_patience
    if patience is not None and state.epochs_without_improvement >= patience:
        say(f"early stopping: validation loss has not improved for {patience} epochs")
        return True
    return False


# ---- the test split, once, with the best checkpoint ----------------------------------------------------


def _brief(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("n", "accuracy", "macro_f1", "balanced_accuracy", "ece", "nll")}


def final_test(cfg: TrainConfig, dataset: Dataset, pre: Preprocessing, out: Path, device: torch.device) -> dict:
    """Evaluate ``best.safetensors`` on the test split (on the training device, in the training precision),
    write the report to ``<out>/test`` and the test metrics into the checkpoint's metadata."""
    best = out / "best.safetensors"
    model = build_model(best, device)
    try:
        test_split = dataset.split(cfg.test_split)
    except DataError as exc:
        console.print(f"[yellow]no test evaluation: {exc}")
        return {}
    test = prepare_split(limit_split(test_split, cfg.test_limit, cfg.seed), pre)
    report = write_report(
        model,
        test,
        out / "test",
        tta_flip=cfg.tta_flip,
        title=f"{dataset.name} {cfg.test_split}",
        ablation=cfg.test_ablation,
        batch_size=cfg.eval_batch_size,
        precision=cfg.precision,
    )
    # record the test metrics in the best checkpoint's metadata (weights unchanged)
    state, meta = load_checkpoint(best)
    meta["metrics"]["test"] = {**_brief(report), "split": cfg.test_split}
    meta["data"]["test"] = test.fingerprint
    save_checkpoint(best, state, meta)
    console.print(
        f"[bold]test[/] ({cfg.test_split}, n={report['n']:,}, best epoch {meta['epoch']}): "
        f"accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}  "
        f"balanced accuracy {report['balanced_accuracy']:.4f}  ECE {report['ece']:.4f}"
    )
    return {"test": _brief(report) | {"split": cfg.test_split}}
