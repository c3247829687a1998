"""The recipes in ``configs/`` reproduce the shipped models: every model a recipe starts from (``init_from``) or
learns from (``teacher``) is pinned, and every pin resolves to the file it names. Experiments (``experiments/``)
are records of past runs and pin nothing.

A pin is a mapping (configs/README.md):
    {model: fer2013, sha256: HEX}                     the shipped file of that name, as it is now
    {model: fer2013-fast, git: COMMIT, sha256: HEX}   the shipped file of that name as it was at COMMIT
    {model: runs/x/best.safetensors, config: x.yaml}  the output of another recipe's run (runs are not kept)
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from expressnet.hub import resolve_model
from expressnet.io import file_sha256
from expressnet.train.config import read_config_file

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
PIN_KEYS = {"model", "sha256", "git", "config"}


def recipes() -> list[Path]:
    return sorted(CONFIGS.glob("*.yaml"))


def field_of(path: Path, key: str) -> Any:
    """A recipe's value of ``key``, from the file or the nearest of its bases that sets it. A pin is one value:
    it replaces the base's whole (read_config_file merges every mapping, as it does the augment/model groups)."""
    values = yaml.safe_load(path.read_text()) or {}
    if key in values or "base" not in values:
        return values.get(key)
    return field_of(path.parent / values["base"], key)


def pins_of(path: Path) -> list[tuple[str, Any]]:
    """(where, pin) for the init_from and teacher(s) of a recipe, bases resolved."""
    init_from = field_of(path, "init_from")
    found = [("init_from", init_from)] if init_from is not None else []
    teacher = field_of(path, "teacher")
    if isinstance(teacher, list):
        found += [(f"teacher[{i}]", t) for i, t in enumerate(teacher)]
    elif teacher is not None:
        found.append(("teacher", teacher))
    return found


PINS = [(path, where, pin) for path in recipes() for where, pin in pins_of(path)]


def pin_id(case: tuple[Path, str, Any]) -> str:
    return f"{case[0].stem}:{case[1]}"


def test_recipes_pin_at_least_the_shipped_chains():
    """The chains of the five shipped models are here and pinned (a guard against PINS quietly going empty)."""
    starts = {path.stem for path, _, _ in PINS}
    for recipe in ("fer2013-compact-stage5", "ferplus-compact-stage7", "rafdb-compact", "fer2013-rafdb"):
        assert recipe in starts, f"configs/{recipe}.yaml pins nothing"
    assert {"fer2013-fast-xs", "fer2013-fast-xs-ensemble", "fer2013-fast-xs-k5"} <= starts


@pytest.mark.parametrize("case", PINS, ids=pin_id)
def test_every_start_and_teacher_of_a_recipe_is_a_pin(case):
    path, where, pin = case
    fix = "write {model: NAME, sha256: HEX} (see configs/README.md)"
    assert isinstance(pin, dict), f"{path.name}: {where} is {pin!r}, not a pin: {fix}"
    assert not set(pin) - PIN_KEYS, f"{path.name}: {where} has unknown keys {sorted(set(pin) - PIN_KEYS)}"
    assert isinstance(pin.get("model"), str), f"{path.name}: {where} names no model: {fix}"
    assert ("sha256" in pin) != ("config" in pin), f"{path.name}: {where} needs a sha256 or the config making it"
    if "sha256" in pin:
        assert re.fullmatch(r"[0-9a-f]{64}", str(pin["sha256"])), f"{path.name}: {where} sha256 is not 64 hex digits"
    if "git" in pin:
        assert re.fullmatch(r"[0-9a-f]{40}", str(pin["git"])), f"{path.name}: {where} git is not a full commit hash"


def git_blob(commit: str, path: str) -> bytes:
    if not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git checkout: the pinned file of commit {commit} cannot be read")
    done = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"], capture_output=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"commit {commit} is not in this clone (shallow?): {done.stderr.decode().strip()}")
    return done.stdout


@pytest.mark.parametrize("case", PINS, ids=pin_id)
def test_every_pin_resolves_to_the_file_it_names(case):
    path, where, pin = case
    if not isinstance(pin, dict):
        pytest.fail(f"{path.name}: {where} is not a pin")
    if "config" in pin:
        recipe = path.parent / pin["config"]
        assert recipe.is_file(), f"{path.name}: {where} names {pin['config']}, which is not in {path.parent}"
        out = read_config_file(recipe)["out"]
        model = pin["model"]
        assert model == out or model.startswith(f"{out}/"), f"{path.name}: {where} {model} is not made by {recipe.name}"
        if not (ROOT / model).exists():
            pytest.skip(f"{path.name}: {where} is {model}, made by the run of configs/{pin['config']} (not kept)")
        return
    shipped = resolve_model(pin["model"]) if "/" not in pin["model"] else ROOT / pin["model"]
    if "git" in pin:
        relative = shipped.resolve().relative_to(ROOT).as_posix()
        digest = hashlib.sha256(git_blob(pin["git"], relative)).hexdigest()
        named = f"{relative} at {pin['git'][:12]}"
    else:
        if not shipped.is_file():
            pytest.skip(f"{path.name}: {where} {shipped} is not here")
        digest, named = file_sha256(shipped), str(shipped)
    assert digest == pin["sha256"], f"{path.name}: {where} pins {pin['sha256'][:12]}…, but {named} is {digest[:12]}…"
