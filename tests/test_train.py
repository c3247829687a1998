"""Training: outputs, reproducible config, exact resume, honest splits, distributed == single process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from conftest import real_data
from safetensors.torch import load_file

from expressnet.data import DataError
from expressnet.train.augment import AugmentConfig
from expressnet.train.config import (
    TrainConfig,
    apply_overrides,
    config_from_file,
    parse_set,
    read_config_file,
    recipe,
)
from expressnet.train.loop import run


def tiny_config(data, out, **kw) -> TrainConfig:
    base = TrainConfig(
        preset="tiny", data=str(data), epochs=3, batch_size=32, lr=0.05, out=str(out), tensorboard=False,
        augment=AugmentConfig(flip=0.5, rotate=10, scale=0.1, translate=0.05, erase=0.3), ema_decay=0.9,
        mixup=0.2, warmup_epochs=0.5,
    )  # fmt: skip
    return replace(base, **kw)


class Interrupt(Exception):
    pass


def test_run_writes_everything_and_learns(synthetic_fer, tmp_path):
    out = tmp_path / "run"
    summary = run(tiny_config(synthetic_fer, out, epochs=6, mixup=0.0, tensorboard=True))
    for name in ("config.yaml", "log.csv", "history.json", "curves.png", "best.safetensors", "best.json",
                 "last.safetensors", "state.pt", "summary.json", "test/metrics.json", "test/confusion.png",
                 "test/reliability.png", "test/routing_global.png"):  # fmt: skip
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
    # the saved config reproduces the run's settings
    assert TrainConfig.load(out / "config.yaml") == tiny_config(
        synthetic_fer, out, epochs=6, mixup=0.0, tensorboard=True
    )
    with pytest.raises(FileExistsError):
        run(tiny_config(synthetic_fer, out))  # never overwrites an existing run


def test_test_report_without_expert_ablation(synthetic_fer, tmp_path):
    out = tmp_path / "run"
    summary = run(tiny_config(synthetic_fer, out, epochs=1, max_steps_per_epoch=2, test_ablation=False))
    metrics = json.loads((out / "test" / "metrics.json").read_text())
    assert "expert_ablation" not in metrics and metrics["accuracy"] == summary["test"]["accuracy"]


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


def test_fer2013_trains_on_ferplus_vote_targets(synthetic_fer, tmp_path):
    import numpy as np

    with np.load(synthetic_fer) as fer:
        n = len(fer["labels"])
        votes = np.zeros((n, 10), np.int64)
        votes[:, 0] = 10  # every rater says neutral
        np.savez_compressed(tmp_path / "plus.npz", votes=votes, split=fer["split"], kaggle_match_index=np.arange(n))
    cfg = tiny_config(synthetic_fer, tmp_path / "r", epochs=1, max_steps_per_epoch=2, labels="votes",
                      votes=str(tmp_path / "plus.npz"), vote_weight=0.2)  # fmt: skip
    run(cfg)
    assert TrainConfig.load(tmp_path / "r" / "config.yaml").vote_weight == 0.2
    with pytest.raises(ValueError, match="labels must be hard, soft or votes"):
        run(replace(cfg, labels="crowd", out=str(tmp_path / "r2")))
    with pytest.raises(DataError, match="no kaggle_match_index"):
        run(replace(cfg, votes=str(synthetic_fer), out=str(tmp_path / "r3")))


def test_soft_labels_blend_with_the_majority():
    from expressnet.data import Prepared
    from expressnet.train.loop import blend_majority

    votes = torch.tensor([[0.4, 0.4, 0.2], [0.1, 0.0, 0.9]])
    data = Prepared(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 2]), votes, ("a", "b", "c"),
                    ["x", "y"], {}, "f")  # fmt: skip
    blended = blend_majority(data, 0.5).soft_labels
    torch.testing.assert_close(blended, torch.tensor([[0.7, 0.2, 0.1], [0.05, 0.0, 0.95]]))
    assert torch.equal(data.soft_labels, votes)  # the input is left as it was
    assert blend_majority(data, 1.0) is data
    torch.testing.assert_close(blend_majority(data, 0.0).soft_labels, torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))
    with pytest.raises(ValueError, match="soft_weight must be in"):
        TrainConfig(soft_weight=1.5)


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
    assert read_config_file(tmp_path / "sub" / "b.yaml") == {
        "lr": 0.01, "epochs": 5, "augment": {"flip": 0.5, "rotate": 3}, "model": {"top_k": 1}
    }  # fmt: skip
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
    from pathlib import Path

    configs = Path(__file__).parents[1] / "configs"
    for path in sorted(configs.glob("*.yaml")):
        assert config_from_file(path).out.startswith("runs/"), path
    votes = read_config_file(configs / "fer2013-compact-votes.yaml")  # two levels of base
    assert votes["optimizer"] == "adamw" and votes["augment"]["rotate"] == 8 and votes["labels"] == "votes"
    assert votes["init_from"] == read_config_file(configs / "fer2013-compact-stage3.yaml")["init_from"]
    assert votes["lr"] == 3e-4 and votes["out"] == "runs/fer2013-compact-votes"
    ferplus = config_from_file(configs / "ferplus-compact-stage7.yaml")  # seven levels; nested keys merge per key
    assert ferplus.model == {"feature_dropout": 0.0, "conv_dropout": 0.0}
    assert ferplus.augment.erase == 0.0 and ferplus.augment.rotate == 8 and ferplus.labels == "soft"
    assert ferplus.data == "ferplus" and ferplus.lr == 1e-4 and ferplus.epochs == 10 and ferplus.soft_weight == 0.5
    assert ferplus.weight_decay == 0.005 and ferplus.init_from == "runs/ferplus-compact-stage6/best.safetensors"


def test_paper_schedule_decays_per_epoch():
    from expressnet.train.loop import lr_factor

    f = lr_factor(recipe("paper"), steps_per_epoch=10)
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
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "expressnet", "train", "--config", str(tmp_path / "ddp.yaml")]  # fmt: skip
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
def test_real_fer2013_slice_learns(tmp_path):
    """Brief training on a slice of real FER-2013 is clearly above chance on held-out PublicTest images."""
    path = real_data("fer2013.npz")
    cfg = replace(
        recipe("tiny"), data=str(path), epochs=4, train_limit=8000, val_limit=1500, test_limit=1000,
        out=str(tmp_path / "r"), tensorboard=False, optimizer="adam", lr=3e-3, weight_decay=0.0, warmup_epochs=0.2,
        augment=AugmentConfig(), ema_decay=0.0, label_smoothing=0.0, precision="fp32", tta_flip=False,
        model={"global_dim": 64, "fusion_dim": 64},
    )  # fmt: skip
    summary = run(cfg)
    history = json.loads((tmp_path / "r" / "history.json").read_text())["epochs"]
    # the majority class (happy) is 25 % of the test splits; uniform guessing is 14 %
    assert max(h["val_accuracy"] for h in history) > 0.35
    assert summary["test"]["accuracy"] > 0.33 and summary["test"]["n"] == 1000


def test_init_from_matches_classifier_rows_by_class_name(tmp_path):
    from expressnet.checkpoint import save_checkpoint
    from expressnet.nn import create_model
    from expressnet.train.loop import init_from_checkpoint

    torch.manual_seed(0)
    source = create_model("tiny", num_classes=3)
    meta = {"model_config": source.config.to_dict(), "class_names": ["angry", "happy", "sad"],
            "preprocessing": {"input_size": 48, "channels": 1}}  # fmt: skip
    save_checkpoint(tmp_path / "src.safetensors", source.state_dict(), meta)
    target = create_model("tiny", num_classes=4)
    fresh_contempt = target.head.weight[1].clone()
    message = init_from_checkpoint(
        target, str(tmp_path / "src.safetensors"), ("happiness", "contempt", "anger", "sadness")
    )
    assert "3/4 classes" in message
    assert torch.equal(target.backbone.conv1.weight, source.backbone.conv1.weight)
    assert torch.equal(target.head.weight[0], source.head.weight[1])  # happy
    assert torch.equal(target.head.weight[2], source.head.weight[0])  # angry
    assert torch.equal(target.head.weight[3], source.head.weight[2])  # sad
    assert torch.equal(target.head.weight[1], fresh_contempt)  # no counterpart: left as initialised
    with pytest.raises(ValueError, match="do not fit"):
        init_from_checkpoint(create_model("compact-s"), str(tmp_path / "src.safetensors"), ("angry",))
