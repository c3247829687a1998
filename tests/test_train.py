"""Training: outputs, reproducible config, exact resume, honest splits, distributed == single process."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import real_data
from safetensors.torch import load_file

from expressnet.checkpoint import build_model, load_checkpoint, save_checkpoint
from expressnet.data import DataError, Prepared, Preprocessing, Split, load_dataset
from expressnet.evaluate.report import write_report
from expressnet.hub import load_model
from expressnet.nn import ExpressNetConfig, create_model
from expressnet.nn.shrink import shrink_state
from expressnet.runtime.batched import predict_logits
from expressnet.train import loop
from expressnet.train.augment import AugmentConfig
from expressnet.train.config import (
    TrainConfig,
    apply_overrides,
    config_from_file,
    parse_set,
    read_config_file,
    recipe,
)
from expressnet.train.logging import RunLogger
from expressnet.train.loop import TARGETS, TargetContext, blend_majority, load_data, run
from expressnet.train.pins import Pin

CPU = torch.device("cpu")


def tiny_config(data, out, **kw) -> TrainConfig:
    augment = AugmentConfig(flip=0.5, rotate=10, scale=0.1, translate=0.05, erase=0.3)
    base = TrainConfig(
        preset="tiny",
        data=str(data),
        epochs=3,
        batch_size=32,
        lr=0.05,
        out=str(out),
        tensorboard=False,
        augment=augment,
        ema_decay=0.9,
        mixup=0.2,
        warmup_epochs=0.5,
    )
    return replace(base, **kw)


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def trained(synthetic_fer_shared, tmp_path_factory):
    """One 6-epoch run of the tiny model on the synthetic data, shared by the tests that only read a trained run
    (its outputs, its best checkpoint as a teacher): (config, summary)."""
    cfg = tiny_config(synthetic_fer_shared, tmp_path_factory.mktemp("trained") / "run", epochs=6, mixup=0.0)
    cfg = replace(cfg, tensorboard=True)
    return cfg, run(cfg)


RUN_FILES = (
    "config.yaml",
    "log.csv",
    "history.json",
    "curves.png",
    "best.safetensors",
    "best.json",
    "last.safetensors",
    "state.pt",
    "summary.json",
    "test/metrics.json",
    "test/confusion.png",
    "test/reliability.png",
    "test/routing_global.png",
)


@pytest.mark.slow
def test_run_writes_everything_and_learns(trained):
    cfg, summary = trained
    out = Path(cfg.out)
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    history = json.loads((out / "history.json").read_text())
    assert len(history["epochs"]) == 6 and len(history["routing"]) == 6
    assert "moe_global_utilization_entropy" in history["epochs"][0]
    assert summary["test"]["split"] == "test" and summary["test"]["accuracy"] > 0.5  # chance is 1/7
    assert len(json.loads((out / "test" / "metrics.json").read_text())["expert_ablation"]["global"]) == 4
    meta = json.loads((out / "best.json").read_text())
    assert meta["metrics"]["test"]["accuracy"] == summary["test"]["accuracy"]
    assert meta["class_names"][0] == "angry" and meta["preprocessing"]["input_size"] == 48
    assert set(meta["data"]) >= {"train", "val", "test"}  # fingerprints
    assert "teacher_sha256" not in meta["train_config"]
    # the saved config reproduces the run's settings
    assert TrainConfig.load(out / "config.yaml") == cfg


@pytest.mark.slow
def test_run_and_resume_guards(trained, tmp_path):
    cfg, _ = trained
    out = Path(cfg.out)
    with pytest.raises(FileExistsError, match="a run already exists"):
        run(cfg)  # never overwrites an existing run
    with pytest.raises(ValueError, match="must exceed the 6 epochs already completed"):
        run(cfg, resume=True, epochs=3)
    assert TrainConfig.load(out / "config.yaml") == cfg  # a refused resume changes nothing
    with pytest.raises(ValueError, match="only for resume"):
        run(replace(cfg, out=str(tmp_path / "new")), epochs=3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"{empty}: nothing to resume"):
        run(replace(cfg, out=str(empty)), resume=True)


@pytest.mark.slow
def test_final_test_on_the_training_device_without_expert_ablation(trained, tmp_path, monkeypatch):
    """The end-of-run test builds the best checkpoint on the training device and evaluates it in the training
    precision; test_ablation=False leaves the drop-one-expert ablation out of the report."""
    cfg, _ = trained
    shutil.copy(Path(cfg.out) / "best.safetensors", tmp_path / "best.safetensors")
    cfg = replace(cfg, out=str(tmp_path), test_ablation=False, precision="bf16", eval_batch_size=64)
    seen = {}

    def spy_build(path, device="cpu"):
        seen["device"] = device
        return build_model(path, device)

    def spy_report(*args, **kwargs):
        seen.update(precision=kwargs["precision"], batch_size=kwargs["batch_size"])
        return write_report(*args, **kwargs)

    monkeypatch.setattr(loop, "build_model", spy_build)
    monkeypatch.setattr(loop, "write_report", spy_report)
    dataset = load_dataset(cfg.data)
    summary = loop.final_test(cfg, dataset, Preprocessing(48, 1), tmp_path, CPU)
    assert seen == {"device": CPU, "precision": "bf16", "batch_size": 64}
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert "expert_ablation" not in metrics and metrics["accuracy"] == summary["test"]["accuracy"]
    assert json.loads((tmp_path / "best.json").read_text())["metrics"]["test"]["split"] == "test"


@pytest.mark.slow
def test_resume_after_interruption_matches_uninterrupted(synthetic_fer, tmp_path):
    straight = run(tiny_config(synthetic_fer, tmp_path / "a"))

    def kill_mid_epoch(epoch, step):
        if epoch == 1 and step == 3:
            raise Interrupt

    cfg = tiny_config(synthetic_fer, tmp_path / "b")
    with pytest.raises(Interrupt):
        run(cfg, on_step=kill_mid_epoch)
    assert len(json.loads((tmp_path / "b" / "history.json").read_text())["epochs"]) == 1
    resumed = run(cfg, resume=True)
    assert resumed == straight
    a, b = load_file(str(tmp_path / "a" / "last.safetensors")), load_file(str(tmp_path / "b" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ha = json.loads((tmp_path / "a" / "history.json").read_text())["epochs"]
    hb = json.loads((tmp_path / "b" / "history.json").read_text())["epochs"]
    for ra, rb in zip(ha, hb, strict=True):
        assert ra["val_loss"] == rb["val_loss"] and ra["train_loss"] == rb["train_loss"]


def test_resume_can_change_the_total_epochs(synthetic_fer, tmp_path):
    def stop_after_first_epoch(epoch, step):
        if epoch == 1:
            raise Interrupt

    cfg = tiny_config(synthetic_fer, tmp_path / "r", epochs=4)
    with pytest.raises(Interrupt):
        run(cfg, on_step=stop_after_first_epoch)
    with pytest.raises(ValueError, match="must exceed"):
        run(cfg, resume=True, epochs=1)
    run(cfg, resume=True, epochs=2)
    history = json.loads((tmp_path / "r" / "history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == [1, 2]
    saved = TrainConfig.load(tmp_path / "r" / "config.yaml")
    assert saved.epochs == 2 and saved.epoch_changes == [{"after_epoch": 1, "from": 4, "to": 2}]
    assert history[-1]["lr"] < 1e-3 * cfg.lr  # the cosine was recomputed to end at the new total


def test_validation_must_not_be_the_test_split(synthetic_fer, tmp_path):
    with pytest.raises(DataError, match="overlaps the test split"):
        run(tiny_config(synthetic_fer, tmp_path / "r", val_split="PrivateTest"))
    with pytest.raises(DataError, match="overlaps"):
        run(tiny_config(synthetic_fer, tmp_path / "r", val_split="PublicTest+PrivateTest", test_split="PrivateTest"))


@pytest.mark.slow
def test_fer2013_trains_on_ferplus_vote_targets(synthetic_fer, tmp_path):
    with np.load(synthetic_fer) as fer:
        n = len(fer["labels"])
        votes = np.zeros((n, 10), np.int64)
        votes[:, 0] = 10  # every rater says neutral
        np.savez_compressed(tmp_path / "plus.npz", votes=votes, split=fer["split"], kaggle_match_index=np.arange(n))
    plus = str(tmp_path / "plus.npz")
    cfg = tiny_config(
        synthetic_fer, tmp_path / "r", epochs=1, max_steps_per_epoch=2, labels="votes", votes=plus, vote_weight=0.2
    )
    run(cfg)
    assert TrainConfig.load(tmp_path / "r" / "config.yaml").vote_weight == 0.2
    with pytest.raises(ValueError, match="labels must be hard, soft or votes"):
        run(replace(cfg, labels="crowd", out=str(tmp_path / "r2")))
    with pytest.raises(DataError, match="no kaggle_match_index"):
        run(replace(cfg, votes=str(synthetic_fer), out=str(tmp_path / "r3")))
    # the "votes" target builder: 0.8 * one-hot(FER-2013 label) + 0.2 * one-hot(neutral)
    dataset = load_dataset(str(synthetic_fer))
    train, _ = load_data(cfg, dataset, Preprocessing(48, 1), CPU)
    neutral = F.one_hot(torch.full_like(train.labels, 6), 7).float()
    torch.testing.assert_close(train.soft_labels, 0.8 * F.one_hot(train.labels, 7).float() + 0.2 * neutral)


def toy_split(soft_labels: np.ndarray | None = None) -> Split:
    labels = np.array([0, 2, 1, 2])
    images = np.arange(4 * 48 * 48, dtype=np.uint8).reshape(4, 48, 48)
    sources = [f"{i}.png" for i in range(4)]
    return Split("Training", ("angry", "disgust", "fear"), labels, sources, images=images, soft_labels=soft_labels)


def test_target_builders_hard_and_soft():
    ctx = TargetContext(dataset=None, pre=Preprocessing(48, 1), device=CPU, progress=False)
    hard = TARGETS.get("hard")(TrainConfig(), toy_split(), ctx)
    assert torch.equal(hard.soft_labels, torch.eye(3)[[0, 2, 1, 2]]) and hard.soft_labels.dtype == torch.float32
    votes = np.array([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0]], np.float32)
    soft = TARGETS.get("soft")(TrainConfig(labels="soft", soft_weight=0.5), toy_split(votes), ctx)
    expected = 0.5 * torch.from_numpy(votes) + 0.5 * torch.eye(3)[[0, 2, 1, 2]]
    torch.testing.assert_close(soft.soft_labels, expected)
    with pytest.raises(DataError, match="labels=soft needs vote distributions"):
        TARGETS.get("soft")(TrainConfig(labels="soft"), toy_split(), ctx)
    assert set(TARGETS.names()) == {"hard", "soft", "votes", "teacher"}
    assert loop.target_kind(TrainConfig(teacher="fer2013")) == "teacher" and loop.target_kind(TrainConfig()) == "hard"


def test_soft_labels_blend_with_the_majority():
    votes = torch.tensor([[0.4, 0.4, 0.2], [0.1, 0.0, 0.9]])
    images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    data = Prepared(images, torch.tensor([0, 2]), votes, ("a", "b", "c"), ["x", "y"], {}, "f")
    blended = blend_majority(data, 0.5).soft_labels
    torch.testing.assert_close(blended, torch.tensor([[0.7, 0.2, 0.1], [0.05, 0.0, 0.95]]))
    assert torch.equal(data.soft_labels, votes)  # the input is left as it was
    assert blend_majority(data, 1.0) is data
    torch.testing.assert_close(blend_majority(data, 0.0).soft_labels, torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))
    with pytest.raises(ValueError, match="soft_weight must be in"):
        TrainConfig(soft_weight=1.5)


def teacher_probabilities(teacher_path, images: torch.Tensor, temperature: float) -> torch.Tensor:
    teacher = load_model(teacher_path)
    logits = predict_logits(teacher, images, tta_flip=teacher.metadata["tta_flip"])
    return torch.softmax(logits / temperature, dim=1)


@pytest.mark.slow
def test_distillation_targets_are_the_teachers_softened_probabilities(trained):
    trained_cfg, _ = trained
    teacher = str(Path(trained_cfg.out) / "best.safetensors")
    cfg = replace(trained_cfg, teacher=teacher, distill_temperature=2.0, soft_weight=0.75, train_limit=100)
    dataset = load_dataset(cfg.data)
    train, val = load_data(cfg, dataset, Preprocessing(48, 1), CPU)
    hard = F.one_hot(train.labels, 7).float()
    expected = 0.75 * teacher_probabilities(teacher, train.images, 2.0) + 0.25 * hard
    torch.testing.assert_close(train.soft_labels, expected)
    assert len(train) == 100 and len(val) == 70
    # a student with other inputs: the teacher still sees the images prepared its own way (48 px gray)
    rgb, _ = load_data(cfg, dataset, Preprocessing(32, 3), CPU)
    assert rgb.images.shape[1:] == (3, 32, 32) and torch.equal(rgb.labels, train.labels)
    torch.testing.assert_close(rgb.soft_labels, expected)


@pytest.mark.slow
def test_ensemble_teacher_targets_average_each_teachers_softened_probabilities(trained):
    trained_cfg, _ = trained
    out = Path(trained_cfg.out)
    teachers = (str(out / "best.safetensors"), str(out / "last.safetensors"))
    cfg = replace(trained_cfg, teacher=teachers, distill_temperature=2.0, soft_weight=0.5, train_limit=100)
    train, _ = load_data(cfg, load_dataset(cfg.data), Preprocessing(48, 1), CPU)
    each = [teacher_probabilities(t, train.images, 2.0) for t in teachers]
    assert not torch.allclose(each[0], each[1])  # two different teachers, so the mean is not either one
    expected = 0.5 * (each[0] + each[1]) / 2 + 0.5 * F.one_hot(train.labels, 7).float()
    torch.testing.assert_close(train.soft_labels, expected)
    torch.testing.assert_close(train.soft_labels.sum(1), torch.ones(100))


@pytest.mark.slow
def test_teacher_logits_are_cached_per_teacher_and_images(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("EXPRESSNET_CACHE", str(tmp_path / "cache"))
    trained_cfg, _ = trained
    out = Path(trained_cfg.out)
    best, last = load_model(out / "best.safetensors"), load_model(out / "last.safetensors")
    images = torch.randint(0, 256, (12, 1, 48, 48), dtype=torch.uint8)
    first = loop.teacher_logits(best, images, trained_cfg)
    torch.testing.assert_close(first, predict_logits(best, images, tta_flip=best.metadata["tta_flip"]))
    assert len(list((tmp_path / "cache" / "teacher-logits").glob("*.safetensors"))) == 1

    def not_again(*args, **kwargs):
        raise AssertionError("the cached logits should have been used")

    monkeypatch.setattr(loop, "predict_logits", not_again)
    assert torch.equal(loop.teacher_logits(best, images, trained_cfg), first)
    monkeypatch.undo()
    monkeypatch.setenv("EXPRESSNET_CACHE", str(tmp_path / "cache"))
    # another teacher file, other images, another precision: each its own entry, never the cached one
    assert not torch.allclose(loop.teacher_logits(last, images, trained_cfg), first)
    other = images.clone()
    other[0, 0, 0, 0] ^= 1
    loop.teacher_logits(best, other, trained_cfg)
    loop.teacher_logits(best, images, replace(trained_cfg, precision="bf16"))
    assert len(list((tmp_path / "cache" / "teacher-logits").glob("*.safetensors"))) == 4


@pytest.mark.slow
def test_distillation_run_records_the_teacher(trained, tmp_path):
    teacher = str(Path(trained[0].out) / "best.safetensors")
    cfg = tiny_config(trained[0].data, tmp_path / "student", epochs=1, max_steps_per_epoch=2, teacher=teacher)
    run(replace(cfg, test_ablation=False))
    meta = json.loads((tmp_path / "student" / "best.json").read_text())
    assert (tmp_path / "student" / "best.safetensors").is_file()
    sha = hashlib.sha256(Path(teacher).read_bytes()).hexdigest()
    assert meta["train_config"]["teacher"] == teacher and meta["train_config"]["teacher_sha256"] == sha
    # an ensemble records every teacher's checksum, in order
    last = str(Path(trained[0].out) / "last.safetensors")
    run(replace(cfg, teacher=(teacher, last), out=str(tmp_path / "ensemble"), test_ablation=False))
    meta = json.loads((tmp_path / "ensemble" / "best.json").read_text())
    assert meta["train_config"]["teacher"] == [teacher, last]
    assert meta["train_config"]["teacher_sha256"] == [sha, hashlib.sha256(Path(last).read_bytes()).hexdigest()]


@pytest.mark.slow
def test_online_distillation_targets_are_the_teachers_view_of_the_students_augmented_batch(
    trained, tmp_path, monkeypatch
):
    teacher = str(Path(trained[0].out) / "best.safetensors")
    cfg = tiny_config(
        trained[0].data, tmp_path / "online", epochs=1, max_steps_per_epoch=3, teacher=teacher, distill="online",
        teacher_backend="torch", soft_weight=0.7, distill_temperature=2.0, label_smoothing=0.0, test_ablation=False,
    )  # fmt: skip
    seen, targets = [], []
    original = loop.soft_cross_entropy

    def recording_loss(logits, target, weights):
        targets.append(target.detach().clone())
        return original(logits, target, weights)

    def record_training_inputs(module, inputs):
        if module.training:
            seen.append(inputs[0].detach().clone())

    def recording_model(*args, **kwargs):
        model = create_model(*args, **kwargs)
        model.register_forward_pre_hook(record_training_inputs)
        return model

    monkeypatch.setattr(loop, "soft_cross_entropy", recording_loss)
    monkeypatch.setattr(loop, "create_model", recording_model)
    run(cfg)
    assert len(seen) == len(targets) == 3
    reference = load_model(teacher)
    for x, target in zip(seen, targets):
        # the teacher saw the student's augmented (and mixed) batch, as uint8 crops, with its own flip averaging
        crops = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        logits = predict_logits(reference, crops, tta_flip=reference.metadata["tta_flip"])
        teacher_part = 0.7 * torch.softmax(logits / 2.0, dim=1)
        label_part = target - teacher_part  # 0.3 x the (mixed) one-hot labels: non-negative, summing to 0.3
        assert label_part.min() > -1e-4
        torch.testing.assert_close(label_part.sum(1), torch.full((len(x),), 0.3), atol=1e-4, rtol=0)
        assert ((label_part > 1e-3).sum(1) <= 2).all()  # one label per image, two where mixed
    meta = json.loads((tmp_path / "online" / "best.json").read_text())
    assert meta["train_config"]["distill"] == "online"


@pytest.mark.slow
def test_online_teacher_needs_the_students_input_and_classes(trained):
    teacher = str(Path(trained[0].out) / "best.safetensors")
    cfg = TrainConfig(teacher=teacher, distill="online", teacher_backend="torch")
    classes = load_model(teacher).class_names
    assert loop.online_teacher(replace(cfg, distill="fixed"), classes, Preprocessing(48, 1), CPU) is None
    ready = loop.online_teacher(cfg, classes[::-1], Preprocessing(48, 1), CPU)
    assert ready.columns == (tuple(range(len(classes)))[::-1],)  # matched by name, in the student's order
    with pytest.raises(DataError, match="online distillation feeds the teacher the student's inputs"):
        loop.online_teacher(cfg, classes, Preprocessing(32, 3), CPU)
    with pytest.raises(DataError, match="not the classes \\['contempt'\\]"):
        loop.online_teacher(cfg, (*classes, "contempt"), Preprocessing(48, 1), CPU)


def test_distillation_config_is_checked():
    with pytest.raises(ValueError, match="use labels=hard"):
        TrainConfig(teacher="fer2013", labels="soft")
    with pytest.raises(ValueError, match="distill=online needs a teacher"):
        TrainConfig(distill="online")
    with pytest.raises(ValueError, match="distill must be fixed or online"):
        TrainConfig(teacher="fer2013", distill="live")
    assert loop.target_kind(TrainConfig(teacher="fer2013", distill="online")) == "hard"  # blended in per batch
    with pytest.raises(ValueError, match="non-empty list"):
        TrainConfig(teacher=())
    with pytest.raises(ValueError, match="non-empty list"):
        TrainConfig.from_dict({"teacher": ["fer2013", 3]})
    ensemble = TrainConfig.from_dict({"teacher": ["fer2013", "fer2013-rafdb"]})  # YAML lists become tuples
    assert ensemble.teachers == ("fer2013", "fer2013-rafdb") and TrainConfig(teacher="fer2013").teachers == ("fer2013",)
    assert TrainConfig.from_dict(ensemble.to_dict()) == ensemble and TrainConfig().teachers == ()
    assert loop.target_kind(ensemble) == "teacher"
    with pytest.raises(ValueError, match="distill_temperature must be positive"):
        TrainConfig(distill_temperature=0.0)
    assert TrainConfig().teacher is None and TrainConfig().distill_temperature == 1.0


def test_optimizers_and_schedules_by_name():
    model = torch.nn.Linear(3, 2)
    for name, kind in [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]:
        assert type(loop.make_optimizer(TrainConfig(optimizer=name), model)) is kind
    with pytest.raises(ValueError, match=r"unknown optimizer 'lion' \(choose from adam, adamw, sgd\)"):
        loop.make_optimizer(TrainConfig(optimizer="lion"), model)
    with pytest.raises(ValueError, match=r"unknown schedule 'step' \(choose from constant, cosine, exponential\)"):
        loop.lr_factor(TrainConfig(schedule="step"), steps_per_epoch=10)
    with pytest.raises(ValueError, match="unknown class weighting 'square'"):
        loop.class_weight_vector(TrainConfig(class_weights="square"), torch.tensor([0, 1]), 2)
    constant = loop.lr_factor(TrainConfig(schedule="constant", warmup_epochs=1.0), steps_per_epoch=4)
    assert [constant(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_config_dicts_round_trip_and_reject_unknown_keys():
    cfg = replace(recipe("compact"), augment=AugmentConfig(erase=0.5, erase_area=(0.1, 0.2)))
    plain = cfg.to_dict()
    assert plain["augment"]["erase_area"] == [0.1, 0.2]  # YAML-ready
    assert TrainConfig.from_dict(plain) == cfg and TrainConfig.from_dict(plain).augment.erase_area == (0.1, 0.2)
    with pytest.raises(ValueError, match=r"unknown training config.*\['epoch'\]"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match=r"augment.*\['spin'\]"):
        TrainConfig.from_dict({"augment": {"spin": 1}})


def test_missing_tensorboard_is_an_error_saying_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install tensorboard"):
        RunLogger(tmp_path, TrainConfig(tensorboard=True))
    RunLogger(tmp_path / "off", TrainConfig(tensorboard=False))  # not needed when off


def test_recipes_and_overrides():
    paper = recipe("paper")
    assert (paper.optimizer, paper.lr, paper.batch_size, paper.epochs, paper.label_smoothing) == (
        "adam",
        1e-4,
        32,
        15,
        0.1,
    )
    assert (paper.schedule, paper.lr_decay, paper.early_stopping_patience, paper.augment) == (
        "exponential",
        0.95,
        5,
        AugmentConfig(),
    )
    cfg = apply_overrides(recipe("compact"), parse_set(["augment.rotate=5", "model={top_k: 1}", "epochs=3"]))
    assert cfg.augment.rotate == 5 and cfg.model == {"top_k": 1} and cfg.epochs == 3
    with pytest.raises(ValueError, match="unknown training config key"):
        apply_overrides(cfg, {"epoch": 3})


def test_config_files_build_on_a_base(tmp_path):
    (tmp_path / "a.yaml").write_text("lr: 0.1\nepochs: 5\naugment: {flip: 0.5, rotate: 8}\nmodel: {top_k: 1}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text("base: ../a.yaml\nlr: 0.01\naugment: {rotate: 3}\n")
    expected = {"lr": 0.01, "epochs": 5, "augment": {"flip": 0.5, "rotate": 3}, "model": {"top_k": 1}}
    assert read_config_file(tmp_path / "sub" / "b.yaml") == expected
    (tmp_path / "a.yaml").write_text("base: sub/b.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        read_config_file(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ValueError, match=r"missing\.yaml: cannot read config"):
        read_config_file(tmp_path / "c.yaml")


def test_config_from_file_starts_from_the_presets_recipe(tmp_path):
    assert config_from_file(None) == recipe("compact") and config_from_file(None, "paper") == recipe("paper")
    (tmp_path / "a.yaml").write_text("preset: paper\nepochs: 3\n")
    assert config_from_file(tmp_path / "a.yaml") == replace(recipe("paper"), epochs=3)
    chosen = config_from_file(tmp_path / "a.yaml", preset="compact")  # the caller's preset wins over the file's
    assert chosen == replace(recipe("compact"), epochs=3)


def test_committed_configs_resolve():
    configs = Path(__file__).parents[1] / "configs"
    experiments = configs.parent / "experiments"  # records of runs that did not ship; bases in ../configs
    for path in sorted([*configs.glob("*.yaml"), *experiments.glob("*.yaml")]):
        assert config_from_file(path).out.startswith("runs/"), path
    votes = read_config_file(experiments / "fer2013-compact-votes.yaml")  # two levels of base
    assert votes["optimizer"] == "adamw" and votes["augment"]["rotate"] == 8 and votes["labels"] == "votes"
    assert votes["init_from"] == read_config_file(configs / "fer2013-compact-stage3.yaml")["init_from"]
    assert votes["lr"] == 3e-4 and votes["out"] == "runs/fer2013-compact-votes"
    ferplus = config_from_file(configs / "ferplus-compact-stage7.yaml")  # seven levels; nested keys merge per key
    assert ferplus.model == {"feature_dropout": 0.0, "conv_dropout": 0.0}
    assert ferplus.augment.erase == 0.0 and ferplus.augment.rotate == 8 and ferplus.labels == "soft"
    assert ferplus.data == "ferplus" and ferplus.lr == 1e-4 and ferplus.epochs == 10 and ferplus.soft_weight == 0.5
    assert ferplus.weight_decay == 0.005
    assert ferplus.init_from == Pin(
        "runs/ferplus-compact-stage6/best.safetensors", config="ferplus-compact-stage6.yaml"
    )


def test_paper_schedule_decays_per_epoch():
    f = loop.lr_factor(recipe("paper"), steps_per_epoch=10)
    assert f(0) == 1.0 and f(9) == 1.0 and f(10) == pytest.approx(0.95) and f(25) == pytest.approx(0.95**2)


@pytest.mark.slow
def test_two_process_ddp_equals_single_process(synthetic_fer, tmp_path):
    """torchrun --nproc_per_node=2 (gloo, CPU) computes what one process with the whole batch computes."""
    common = dict(epochs=1, max_steps_per_epoch=5, ema_decay=0.0, mixup=0.0, model={"feature_dropout": 0.0})
    single = tiny_config(synthetic_fer, tmp_path / "single", **common)
    run(single)
    cfg = tiny_config(synthetic_fer, tmp_path / "ddp", **common)
    cfg.save(tmp_path / "ddp.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]
    cmd = [*launch, "-m", "expressnet", "train", "--config", str(tmp_path / "ddp.yaml")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    a = load_file(str(tmp_path / "single" / "last.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "last.safetensors"))
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-4), k
    ha = json.loads((tmp_path / "single" / "history.json").read_text())["epochs"][0]
    hb = json.loads((tmp_path / "ddp" / "history.json").read_text())["epochs"][0]
    assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-4)
    assert ha["val_accuracy"] == pytest.approx(hb["val_accuracy"], abs=1 / 70)


@pytest.mark.data
@pytest.mark.slow
def test_real_fer2013_slice_learns(tmp_path):
    """Brief training on a slice of real FER-2013 is clearly above chance on held-out PublicTest images."""
    path = real_data("fer2013.npz")
    limits = dict(train_limit=8000, val_limit=1500, test_limit=1000)
    recipe_ = dict(optimizer="adam", lr=3e-3, weight_decay=0.0, warmup_epochs=0.2, label_smoothing=0.0)
    plain = dict(augment=AugmentConfig(), ema_decay=0.0, precision="fp32", tta_flip=False, tensorboard=False)
    cfg = replace(
        recipe("tiny"),
        data=str(path),
        epochs=4,
        out=str(tmp_path / "r"),
        model={"global_dim": 64, "fusion_dim": 64},
        **limits,
        **recipe_,
        **plain,
    )
    summary = run(cfg)
    history = json.loads((tmp_path / "r" / "history.json").read_text())["epochs"]
    # the majority class (happy) is 25 % of the test splits; uniform guessing is 14 %
    assert max(h["val_accuracy"] for h in history) > 0.35
    assert summary["test"]["accuracy"] > 0.33 and summary["test"]["n"] == 1000


def test_init_from_matches_classifier_rows_by_class_name(tmp_path):
    torch.manual_seed(0)
    source = create_model("tiny", num_classes=3)
    meta = {
        "model_config": source.config.to_dict(),
        "class_names": ["angry", "happy", "sad"],
        "preprocessing": {"input_size": 48, "channels": 1},
    }
    save_checkpoint(tmp_path / "src.safetensors", source.state_dict(), meta)
    target = create_model("tiny", num_classes=4)
    fresh_contempt = target.head.weight[1].clone()
    message = loop.init_from_checkpoint(
        target, str(tmp_path / "src.safetensors"), ("happiness", "contempt", "anger", "sadness")
    )
    assert "3/4 classes" in message
    assert torch.equal(target.backbone.conv1.weight, source.backbone.conv1.weight)
    assert torch.equal(target.head.weight[0], source.head.weight[1])  # happy
    assert torch.equal(target.head.weight[2], source.head.weight[0])  # angry
    assert torch.equal(target.head.weight[3], source.head.weight[2])  # sad
    assert torch.equal(target.head.weight[1], fresh_contempt)  # no counterpart: left as initialised
    with pytest.raises(ValueError, match="do not fit"):
        loop.init_from_checkpoint(create_model("compact-s"), str(tmp_path / "src.safetensors"), ("angry",))


def test_init_grow_adds_identity_blocks_that_keep_the_function(trained, tmp_path):
    source = str(Path(trained[0].out) / "best.safetensors")
    deeper = {"backbone": {"layers": [1, 2]}}  # tiny has one block per stage
    cfg = replace(tiny_config(trained[0].data, tmp_path / "g"), model=deeper, init_from=source)
    classes = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    with pytest.raises(ValueError, match="do not fit"):
        loop.new_model(cfg, classes, lambda *a: None)
    said = []
    grown = loop.new_model(replace(cfg, init_grow=True), classes, said.append).eval()
    original = load_model(source).eval()
    x = torch.rand(4, 1, 48, 48)
    with torch.no_grad():
        assert torch.allclose(grown(x), original(x), atol=1e-6)
        assert grown.backbone.layer2[1].bn2.weight.abs().sum() == 0  # the new block starts as the identity
    assert "1 new identity blocks (backbone.layer2.1)" in said[0]
    grown.train()  # and it learns: its last BatchNorm scale gets a gradient
    loss = grown(x).logsumexp(1).sum()
    loss.backward()
    assert grown.backbone.layer2[1].bn2.weight.grad.abs().sum() > 0
    # a new stage needs a projection shortcut: not an identity
    wider = {"backbone": {"layers": [1, 1, 1], "widths": [8, 16, 16]}}  # same features out, a strided stage
    with pytest.raises(ValueError, match=r"cannot grow backbone\.layer3\.0"):
        loop.new_model(replace(cfg, model=wider, init_grow=True), classes, lambda *a: None)
    with pytest.raises(ValueError, match="exclude each other"):
        replace(cfg, init_grow=True, init_shrink=True)
    with pytest.raises(ValueError, match="need init_from"):
        replace(cfg, init_from=None, init_grow=True)


def test_init_shrink_starts_a_smaller_student_from_a_trained_model(trained, tmp_path):
    source = str(Path(trained[0].out) / "best.safetensors")
    smaller = {"global_dim": 16, "fusion_dim": 16, "backbone": {"widths": [4, 12], "stem_width": 4}}
    cfg = replace(tiny_config(trained[0].data, tmp_path / "s"), model=smaller, init_from=source)
    classes = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    with pytest.raises(ValueError, match="do not fit"):
        loop.new_model(cfg, classes, lambda *a: None)
    said = []
    student = loop.new_model(replace(cfg, init_shrink=True), classes, said.append)
    state, meta = load_checkpoint(source)
    expected = shrink_state(state, ExpressNetConfig.from_dict(meta["model_config"]), student.config)
    assert all(torch.equal(student.state_dict()[k], v) for k, v in expected.items())
    assert "shrunk weights" in said[0]
