"""The training loop, top to bottom: data -> model -> epochs (train, validate, checkpoint) -> one test.

Determinism: every epoch's shuffling, augmentation and dropout draw from generators seeded by
(seed, epoch), so a run resumed after its last completed epoch finishes exactly like an uninterrupted one.
Validation never touches the test split; the test split is evaluated once, with the best checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console

from .. import __version__
from ..checkpoint import build_model, load_checkpoint, save_checkpoint
from ..data import Prepared, Preprocessing, load_dataset, prepare_split, stratified_indices
from ..data.base import DataError, Split
from ..data.ferplus import with_vote_targets
from ..data.registry import resolve
from ..evaluate.core import evaluate_prepared
from ..infer.classify import autocast, to_float
from ..io import atomic_write
from ..nn import create_model
from .augment import augment, mix
from .config import TrainConfig
from .distributed import DistInfo, convert_sync_batchnorm, init_distributed, pick_device, shutdown
from .ema import EMA
from .logging import RunLogger

console = Console(soft_wrap=True)


@dataclass
class TrainState:
    """What --resume restores besides weights, optimizer and scheduler."""

    epoch: int = 0  # epochs completed
    best_val_accuracy: float = -1.0
    best_epoch: int = -1
    best_val_loss: float = math.inf
    epochs_without_improvement: int = 0
    history: list[dict] = field(default_factory=list)


def limit_split(split: Split, n: int | None, seed: int) -> Split:
    """A seeded stratified subset of ``n`` images (all of them when ``n`` is None or large)."""
    if n is None or n >= len(split):
        return split
    _, keep = stratified_indices(split.labels, n / len(split), seed)
    return split.subset(keep)


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step ``s`` (linear warm-up, then the schedule)."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(total - warmup, 1)))
        if cfg.schedule == "exponential":
            return cfg.lr_decay ** (s // steps_per_epoch)
        if cfg.schedule == "constant":
            return 1.0
        raise ValueError(f"unknown schedule {cfg.schedule!r}")

    return factor


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on biases and BatchNorm
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def blend_majority(data: Prepared, soft_weight: float) -> Prepared:
    """``data`` with soft labels ``soft_weight * votes + (1 - soft_weight) * one-hot(majority label)``."""
    if soft_weight == 1:
        return data
    majority = F.one_hot(data.labels, len(data.class_names)).to(data.soft_labels.dtype)
    return replace(data, soft_labels=soft_weight * data.soft_labels + (1 - soft_weight) * majority)


def class_weight_vector(cfg: TrainConfig, labels: torch.Tensor, k: int) -> torch.Tensor | None:
    if cfg.class_weights == "none":
        return None
    counts = torch.bincount(labels, minlength=k).float().clamp_min(1)
    w = {"inverse": 1 / counts, "sqrt-inverse": counts.rsqrt()}[cfg.class_weights]
    return w * k / w.sum()


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy against target distributions (N, K); ``weights`` weight each sample by its target class mix."""
    loss = -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    if weights is not None:
        w = target @ weights.to(target)
        return (loss * w).sum() / w.sum()
    return loss.mean()


def init_from_checkpoint(model: torch.nn.Module, source: str, class_names: tuple[str, ...]) -> str:
    """Copy a checkpoint's weights into ``model``; classifier rows are matched by canonical class name
    (classes the checkpoint lacks keep their fresh initialisation). Returns a one-line description."""
    from ..data.labels import canonical
    from ..hub import resolve_model

    path = resolve_model(source)
    state, meta = load_checkpoint(path)
    own = model.state_dict()
    head = {k for k in state if k.startswith("head.")}
    body = {k: v for k, v in state.items() if k not in head}
    mismatched = [k for k, v in body.items() if k not in own or own[k].shape != v.shape] + sorted(set(own) - set(state))
    if mismatched:
        raise ValueError(f"{path}: weights do not fit this model's architecture (first mismatch: {mismatched[0]})")
    model.load_state_dict({**own, **body})
    theirs = [canonical(c) for c in meta["class_names"]]
    matched = 0
    with torch.no_grad():
        for i, name in enumerate(class_names):
            if canonical(name) in theirs:
                j = theirs.index(canonical(name))
                model.head.weight[i] = state["head.weight"][j]
                model.head.bias[i] = state["head.bias"][j]
                matched += 1
    return f"weights from {path}; classifier rows for {matched}/{len(class_names)} classes matched by name"


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + stream)


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
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(cfg.seed)
    say = console.print if info.is_main else (lambda *a, **k: None)

    # ---- data ------------------------------------------------------------------------------------------
    dataset = load_dataset(cfg.data, cfg.data_kind, **cfg.data_options)
    if "val" not in dataset.roles and cfg.val_split == "val":
        dataset = dataset.with_validation_from_train(cfg.val_fraction, cfg.seed)
    val_names, test_names = (set(dataset.split_names(x)) for x in (cfg.val_split, cfg.test_split))
    if val_names & test_names:
        raise DataError(
            f"validation split {cfg.val_split!r} overlaps the test split {cfg.test_split!r}; choose another"
        )
    class_names = dataset.class_names
    model = create_model(cfg.preset, num_classes=len(class_names), backbone_weights=cfg.backbone_weights, **cfg.model)
    if cfg.init_from:
        say(f"[bold]init[/] {init_from_checkpoint(model, cfg.init_from, class_names)}")
    pre = Preprocessing(model.config.input_size, model.config.in_channels)
    train_split = dataset.split(cfg.train_split)
    if cfg.labels == "votes":
        fer2013_npz = dataset.root if dataset.root.endswith(".npz") else resolve("fer2013")
        train_split = with_vote_targets(train_split, fer2013_npz, resolve(cfg.votes), cfg.vote_weight)
    train = prepare_split(limit_split(train_split, cfg.train_limit, cfg.seed), pre, info.is_main)
    val = prepare_split(limit_split(dataset.split(cfg.val_split), cfg.val_limit, cfg.seed), pre, info.is_main)
    if cfg.labels == "soft":
        if train.soft_labels is None:
            raise DataError(f"{cfg.data}: labels=soft needs vote distributions, which this dataset does not have")
        train = blend_majority(train, cfg.soft_weight)
    skipped = len(train.skipped) + len(val.skipped)
    say(
        f"[bold]data[/] {dataset.name}: train {len(train):,} ({cfg.train_split}), val {len(val):,} ({cfg.val_split}), "
        f"classes {', '.join(class_names)}; skipped {skipped} unreadable/filtered"
    )

    # ---- model, optimizer, schedule --------------------------------------------------------------------
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
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    weights = class_weight_vector(cfg, train.labels, len(class_names))
    state = TrainState()
    if resume:
        saved = torch.load(out / "state.pt", map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        state = TrainState(**saved["state"])
        say(f"[bold]resuming[/] {out} after epoch {state.epoch}")
    eval_model = ema.module if ema is not None else model
    logger = RunLogger(out, cfg, enabled=info.is_main, history=state.history)
    metadata = {
        "package_version": __version__,
        "preset": cfg.preset,
        "model_config": model.config.to_dict(),
        "class_names": list(class_names),
        "preprocessing": pre.to_dict(),
        "tta_flip": cfg.tta_flip,
        "train_config": cfg.to_dict(),
        "data": {"name": dataset.name, "source": str(cfg.data), "train": train.fingerprint, "val": val.fingerprint},
    }

    # ---- epochs ----------------------------------------------------------------------------------------
    share = cfg.batch_size // info.world_size
    mine = slice(info.rank * share, (info.rank + 1) * share)
    for epoch in range(state.epoch, cfg.epochs):
        net.train()
        torch.manual_seed(cfg.seed * 1_000_003 + epoch * 101 + 7 + 9973 * info.rank)  # dropout, noisy gating
        order = torch.randperm(len(train), generator=epoch_generator(cfg.seed, epoch, 0))
        aug_gen = epoch_generator(cfg.seed, epoch, 1)
        totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
        start = time.perf_counter()
        with logger.progress(f"epoch {epoch + 1}/{cfg.epochs}", steps_per_epoch) as advance:
            for step in range(steps_per_epoch):
                idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                x = to_float(train.images[idx])  # the whole global batch: every rank draws the same augmentation
                hard = train.labels[idx]
                target = train.soft_labels[idx] if cfg.labels != "hard" else F.one_hot(hard, len(class_names)).float()
                x = augment(x, cfg.augment, aug_gen)
                x, target = mix(x, target, cfg.mixup, cfg.cutmix, aug_gen)
                target = target * (1 - cfg.label_smoothing) + cfg.label_smoothing / len(class_names)
                x, target, hard = x[mine].to(device), target[mine].to(device), hard[mine].to(device)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast(device, cfg.precision):
                    logits = net(x)
                    loss = soft_cross_entropy(logits, target, weights) + model.aux_loss().to(device)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if ema is not None:
                    ema.update(model)
                with torch.no_grad():
                    totals += torch.tensor(
                        [loss.item() * len(x), (logits.argmax(1) == hard).sum().item(), len(x)], dtype=torch.float64
                    )
                advance(
                    loss=loss.item(),
                    acc=float(totals[1] / totals[2]),
                    ips=totals[2].item() * info.world_size / (time.perf_counter() - start),
                )
                if on_step is not None:
                    on_step(epoch, step)
        if info.enabled:
            torch.distributed.all_reduce(totals)
        seconds = time.perf_counter() - start

        val_metrics = evaluate_prepared(eval_model, val, cfg.tta_flip, cfg.eval_batch_size, cfg.precision)
        row = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": float(totals[0] / totals[2]),
            "train_accuracy": float(totals[1] / totals[2]),
            "val_loss": val_metrics["nll"],
            "val_accuracy": val_metrics["accuracy"],
            "val_macro_f1": val_metrics["macro_f1"],
            "images_per_s": float(totals[2]) / seconds,
            "epoch_seconds": seconds,
        }
        for block, r in val_metrics["routing"].items():
            row[f"moe_{block}_utilization_entropy"] = r["utilization_entropy"]
            row[f"moe_{block}_gate_entropy"] = r["mean_gate_entropy"]
            for e, share_e in enumerate(r["load_topk"]):
                row[f"moe_{block}_load_{e}"] = share_e
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
            meta = {**metadata, "epoch": epoch + 1, "metrics": {"val": _brief(val_metrics)}}
            if improved:
                save_checkpoint(out / "best.safetensors", eval_model.state_dict(), meta)
            save_checkpoint(out / "last.safetensors", eval_model.state_dict(), meta)
            resume_state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "ema": ema.state_dict() if ema is not None else {},
                "state": state.__dict__,
            }
            atomic_write(out / "state.pt", lambda tmp, payload=resume_state: torch.save(payload, tmp))
            logger.epoch(row, val_metrics["routing"])
        say(
            f"epoch {epoch + 1:>3}  loss {row['train_loss']:.4f}  train acc {row['train_accuracy']:.4f}  "
            f"val loss {row['val_loss']:.4f}  val acc {row['val_accuracy']:.4f}  "
            f"val macro-F1 {row['val_macro_f1']:.4f}  {row['images_per_s']:.0f} img/s{'  *best*' if improved else ''}"
        )
        if cfg.early_stopping_patience is not None and state.epochs_without_improvement >= cfg.early_stopping_patience:
            say(f"early stopping: validation loss has not improved for {cfg.early_stopping_patience} epochs")
            break
        if info.enabled:
            torch.distributed.barrier()

    # ---- the test split, once, with the best checkpoint ------------------------------------------------
    summary = {"best_epoch": state.best_epoch, "best_val_accuracy": state.best_val_accuracy, "epochs_run": state.epoch}
    if info.is_main:
        summary.update(_final_test(cfg, dataset, pre, out, metadata))
        logger.finish(summary)
    return summary


def _brief(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("n", "accuracy", "macro_f1", "balanced_accuracy", "ece", "nll")}


def _final_test(cfg: TrainConfig, dataset, pre: Preprocessing, out: Path, metadata: dict) -> dict:
    from ..evaluate.report import write_report

    best = out / "best.safetensors"
    model = build_model(best)
    try:
        test_split = dataset.split(cfg.test_split)
    except DataError as exc:
        console.print(f"[yellow]no test evaluation: {exc}")
        return {}
    test = prepare_split(limit_split(test_split, cfg.test_limit, cfg.seed), pre)
    title = f"{dataset.name} {cfg.test_split}"
    report = write_report(model, test, out / "test", tta_flip=cfg.tta_flip, title=title, ablation=cfg.test_ablation)
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
