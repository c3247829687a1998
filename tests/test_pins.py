"""Pins (expressnet.train.pins): a recipe's init_from and teachers resolve to the exact files it names, or the run
refuses to start, naming the file and what to do."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from expressnet.hub import resolve_model
from expressnet.io import file_sha256
from expressnet.train.config import TrainConfig, config_from_file, read_config_file
from expressnet.train.pins import Pin, PinError, resolve_pin

ROOT = Path(__file__).resolve().parents[1]


def test_a_sha256_pin_resolves_to_the_shipped_name_only_when_the_file_matches():
    digest = file_sha256(resolve_model("fer2013"))
    assert resolve_pin(Pin("fer2013", sha256=digest)) == "fer2013"
    with pytest.raises(PinError, match=r"fer2013\.safetensors: sha256 .* but the recipe pins 0{64}"):
        resolve_pin(Pin("fer2013", sha256="0" * 64))
    assert resolve_pin("fer2013") == "fer2013"  # a plain name passes through


def test_a_config_pin_names_the_recipe_to_run_when_its_output_is_missing(tmp_path):
    with pytest.raises(PinError, match=r"expressnet train --config stage1\.yaml"):
        resolve_pin(Pin(str(tmp_path / "runs/stage1/best.safetensors"), config="stage1.yaml"))
    made = tmp_path / "best.safetensors"
    made.write_bytes(b"x")
    assert resolve_pin(Pin(str(made), config="stage1.yaml")) == str(made)


def test_a_git_pin_reads_the_file_at_that_commit_into_the_cache(tmp_path, monkeypatch):
    if not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git checkout")
    path = resolve_model("fer2013")
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%H", "--", str(path)], capture_output=True, text=True
    ).stdout.strip()
    if not commit:
        pytest.skip("the shipped fer2013 file is not committed in this checkout")
    monkeypatch.setenv("EXPRESSNET_CACHE", str(tmp_path))
    at_commit = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{commit}:expressnet/weights/{path.name}"], capture_output=True
    ).stdout
    digest = hashlib.sha256(at_commit).hexdigest()
    cached = Path(resolve_pin(Pin("fer2013", sha256=digest, git=commit)))
    assert cached.parent == tmp_path / "pins" and file_sha256(cached) == digest
    with pytest.raises(PinError, match="but the recipe pins"):
        resolve_pin(Pin("fer2013", sha256="1" * 64, git=commit))
    # a name retired since (its record and file gone from the package) still resolves: git keeps the file
    (tmp_path / "pins" / cached.name).unlink()
    monkeypatch.setattr("expressnet.train.pins.list_models", lambda: ["ferplus"])
    assert file_sha256(Path(resolve_pin(Pin("fer2013", sha256=digest, git=commit)))) == digest


def test_pins_are_checked_when_written_and_survive_yaml(tmp_path):
    with pytest.raises(ValueError, match="give a sha256, or the config"):
        Pin("fer2013")
    with pytest.raises(ValueError, match="git pin needs the file's sha256"):
        Pin("runs/x", config="x.yaml", git="a" * 40)
    cfg = TrainConfig.from_dict(
        {"init_from": {"model": "fer2013", "sha256": "a" * 64}, "teacher": ["fer2013", {"model": "m", "config": "c"}]}
    )
    assert cfg.init_from == Pin("fer2013", sha256="a" * 64)
    assert cfg.teacher == ("fer2013", Pin("m", config="c"))
    cfg.save(tmp_path / "run.yaml")
    assert TrainConfig.load(tmp_path / "run.yaml") == cfg
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"init_from": {"model": "fer2013", "sha": "a"}})


def test_a_base_replaces_pins_and_merges_only_the_groups(tmp_path):
    (tmp_path / "base.yaml").write_text(
        yaml.safe_dump({"init_from": {"model": "fer2013", "sha256": "a" * 64}, "augment": {"rotate": 5, "flip": 0.5}})
    )
    (tmp_path / "child.yaml").write_text(
        yaml.safe_dump(
            {"base": "base.yaml", "init_from": {"model": "runs/x", "config": "x.yaml"}, "augment": {"rotate": 8}}
        )
    )
    values = read_config_file(tmp_path / "child.yaml")
    assert values["init_from"] == {"model": "runs/x", "config": "x.yaml"}  # replaced whole, not merged
    assert values["augment"] == {"rotate": 8, "flip": 0.5}  # a group: merged key by key
    assert config_from_file(tmp_path / "child.yaml").init_from == Pin("runs/x", config="x.yaml")
