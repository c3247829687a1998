"""Regression check of the shipped models: accuracy on a fixed, seeded 300-image sample of each model's
validation split stays within 1 point of the figure recorded in its metadata (``metrics.check``, written by
``expressnet.release.record_check``); the metrics each model's record gives are those of its inference file."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import real_data
from safetensors.torch import load_file

from expressnet.checkpoint import read_metadata
from expressnet.data import load_dataset, prepare_split
from expressnet.data.registry import KNOWN_FILES
from expressnet.hub import records, shipped_models
from expressnet.release import record_check
from expressnet.runtime import load_classifier

SHIPPED = shipped_models()


def validation_of(meta: dict) -> tuple[str, str]:
    """The dataset (known name) and split a model was calibrated and selected on."""
    calibration = meta.get("calibration", {})
    data = calibration.get("data") or meta["data"]["name"]
    return data, calibration.get("split", "val")


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_matches_its_recorded_check(name, tmp_path):
    meta = read_metadata(SHIPPED[name])
    check = meta.get("metrics", {}).get("check")
    assert check, f"{name}: no metrics.check in its metadata (expressnet.release.record_check writes it)"
    data, split = validation_of(meta)
    assert check["data"] == data and check["n"] == 300 and check["seed"] == 0
    for part in data.split("+"):  # a model trained on several datasets (fer2013+rafdb) needs each
        real_data(KNOWN_FILES[part])
    copy = tmp_path / SHIPPED[name].name
    shutil.copy(SHIPPED[name], copy)
    shutil.copy(SHIPPED[name].with_suffix(".json"), copy.with_suffix(".json"))
    now = record_check(copy, data, split, n=check["n"], seed=check["seed"])
    assert now["split"] == check["split"] and now["n"] == 300
    assert abs(now["accuracy"] - check["accuracy"]) <= 0.01, (name, now, check)
    assert abs(now["macro_f1"] - check["macro_f1"]) <= 0.02, (name, now, check)
    # recording a check rewrites the metadata only: every stored tensor is unchanged
    before, after = load_file(SHIPPED[name]), load_file(copy)
    assert before.keys() == after.keys()
    assert all(before[k].dtype == after[k].dtype and before[k].equal(after[k]) for k in before)


def test_pack_records_the_check_without_touching_the_weights(tmp_path, synthetic_fer):
    from expressnet.release import pack_model
    from expressnet.train.config import TrainConfig
    from expressnet.train.loop import run

    out = tmp_path / "run"
    cfg = TrainConfig(preset="tiny", data=str(synthetic_fer), epochs=1, batch_size=32, lr=3e-3, out=str(out))
    run(replace_fields(cfg))
    target = tmp_path / "packed.safetensors"
    pack_model(out, target, data=str(synthetic_fer))
    check = read_metadata(target)["metrics"]["check"]
    assert {k: check[k] for k in ("data", "split", "n", "seed")} == {
        "data": str(synthetic_fer),
        "split": "PublicTest",
        "n": 70,  # the whole split when it has fewer than 300 images
        "seed": 0,
    }
    before = load_file(target)
    again = record_check(target, str(synthetic_fer), "val")
    assert again == check  # deterministic: the same sample, the same figures
    after = load_file(target)
    assert all(before[k].equal(after[k]) for k in before)
    assert json.loads(target.with_suffix(".json").read_text())["metrics"]["check"] == check  # the sidecar too


def replace_fields(cfg):
    from dataclasses import replace

    return replace(cfg, threads=1, test_ablation=False, tensorboard=False)


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, r in records().items() if r.metrics])
def test_recorded_metrics_are_those_of_the_inference_file(name):
    """The figures a record (and the README's table) gives are what the file users run gives, to the last digit:
    its validation protocol evaluated again through ``load_classifier(name)`` (the fixed backend rule)."""
    record = records()[name]
    metric = next(m for m in record.metrics if m["role"] == "validation")
    real_data(KNOWN_FILES[metric["data"]])
    classifier = load_classifier(name)
    assert (classifier.backend, classifier.precision) == (metric["backend"], metric["precision"])
    split = load_dataset(metric["data"]).split(metric["split"]).relabel(classifier.class_names)
    prepared = prepare_split(split, classifier.preprocessing, progress=False)
    probabilities = classifier.probabilities(prepared.images.numpy())
    accuracy = float((probabilities.argmax(1) == prepared.labels.numpy()).mean())
    assert len(prepared) == metric["n"] and accuracy == pytest.approx(metric["accuracy"], abs=1e-6), name
