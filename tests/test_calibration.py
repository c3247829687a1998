"""Temperature scaling: fitted on validation, folded into the classifier, recorded by `expressnet pack`."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from expressnet.checkpoint import load_checkpoint
from expressnet.cli import app
from expressnet.evaluate.calibration import bias_gain, fit_bias_corrected_temperature, fit_temperature
from expressnet.evaluate.metrics import classification_metrics


def overconfident(n: int = 4000, k: int = 5, scale: float = 3.0, seed: int = 0):
    """Labels drawn from softmax(z); the logits given are scale * z (too confident by ``scale``)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g) * 1.5
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    return z * scale, labels


def test_fit_recovers_the_temperature_and_lowers_ece():
    logits, labels = overconfident(scale=3.0)
    t = fit_temperature(logits, labels)
    assert 2.6 < t < 3.4
    before = classification_metrics(torch.softmax(logits, 1).numpy(), labels.numpy(), list("abcde"))
    after = classification_metrics(torch.softmax(logits / t, 1).numpy(), labels.numpy(), list("abcde"))
    assert after["accuracy"] == before["accuracy"]  # the argmax never changes
    assert after["ece"] < before["ece"] / 2 and after["nll"] < before["nll"]
    # an underconfident model gets T < 1
    assert fit_temperature(logits / 6, labels) < 0.7


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="need logits"):
        fit_temperature(torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="need logits"):
        fit_temperature(torch.zeros(0, 2), torch.zeros(0))


def test_pack_calibrates_on_val_only(tmp_path, synthetic_fer):
    """A model trained briefly on the synthetic set, packed with --data: the temperature comes from PublicTest,
    the packed test accuracy is the uncalibrated one, and re-packing the packed model keeps the same T."""
    from expressnet.train.config import TrainConfig
    from expressnet.train.loop import run

    out = tmp_path / "run"
    cfg = TrainConfig(
        preset="tiny",
        data=str(synthetic_fer),
        epochs=2,
        batch_size=32,
        lr=3e-3,
        out=str(out),
        threads=1,
        test_ablation=False,
        tensorboard=False,
    )
    run(cfg)
    runner = CliRunner()
    target = tmp_path / "packed.safetensors"
    result = runner.invoke(app, ["pack", str(out), str(target), "--data", str(synthetic_fer)])
    assert result.exit_code == 0, result.output
    meta = load_checkpoint(target)[1]
    t = meta["temperature"]
    assert t > 0 and t != 1.0
    assert meta["calibration"] == {"method": "temperature", "data": "fer2013", "split": "PublicTest"}
    assert meta["metrics"]["packed"]["test"]["split"] == "PrivateTest"
    plain = tmp_path / "plain.safetensors"
    result = runner.invoke(app, ["pack", str(out), str(plain), "--data", str(synthetic_fer), "--no-calibrate"])
    assert result.exit_code == 0, result.output
    plain_meta = load_checkpoint(plain)[1]
    assert "temperature" not in plain_meta
    calibrated, uncalibrated = meta["metrics"]["packed"]["test"], plain_meta["metrics"]["packed"]["test"]
    assert calibrated["accuracy"] == uncalibrated["accuracy"]
    assert calibrated["nll"] != uncalibrated["nll"]
    again = tmp_path / "again.safetensors"
    result = runner.invoke(app, ["pack", str(target), str(again), "--data", str(synthetic_fer)])
    assert result.exit_code == 0, result.output
    assert np.isclose(load_checkpoint(again)[1]["temperature"], t, rtol=0.02)


def test_bcts_recovers_temperature_and_class_shift_and_its_gain_is_held_out():
    """Labels drawn from softmax(z + shift); the model gives 3 z (overconfident, blind to the shift)."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6000, 4, generator=g) * 1.5
    shift = torch.tensor([1.0, -0.5, 0.0, -0.5])
    labels = torch.multinomial(torch.softmax(z + shift, 1), 1, generator=g).squeeze(1)
    t, bias = fit_bias_corrected_temperature(z * 3, labels)
    assert 2.6 < t < 3.4
    assert abs(sum(bias)) < 1e-9  # softmax ignores a common shift: the biases are centred
    assert np.allclose(bias, (shift - shift.mean()).numpy(), atol=0.15)
    mean, sd = bias_gain(z * 3, labels, repeats=3)
    assert mean > 0.005 and sd >= 0  # the prior correction changes predictions for the better on held-out halves
    assert bias_gain(z * 3, labels, repeats=3) == (mean, sd)  # seeded
    # no shift to correct: the held-out gain is about nothing
    plain = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    assert abs(bias_gain(z * 3, plain, repeats=3)[0]) < 0.01


def test_pack_class_bias_folds_biases_the_model_applies(tmp_path, synthetic_fer):
    from expressnet.hub import load_model
    from expressnet.train.config import TrainConfig
    from expressnet.train.loop import run

    out = tmp_path / "run"
    cfg = TrainConfig(preset="tiny", data=str(synthetic_fer), epochs=1, batch_size=32, lr=3e-3, out=str(out))
    run(replace(cfg, threads=1, test_ablation=False, tensorboard=False))
    runner = CliRunner()
    target = tmp_path / "biased.safetensors"
    args = ["pack", str(out), str(target), "--data", str(synthetic_fer), "--class-bias", "--weights", "float32"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "held-out halves of PublicTest" in result.output
    meta = load_checkpoint(target)[1]
    assert meta["calibration"]["method"] == "temperature+bias (BCTS)"
    assert len(meta["calibration"]["held_out_gain"]) == 2
    t, bias = meta["temperature"], torch.tensor(meta["logit_bias"])
    assert len(bias) == 7 and abs(float(bias.sum())) < 1e-6
    x = torch.rand(5, 1, 48, 48)
    with torch.no_grad():
        raw = load_model(out).eval()(x)  # the run's checkpoint: no temperature, no biases
        packed = load_model(target).eval()(x)
    assert torch.allclose(packed, raw / t + bias, atol=1e-5)
    # biases need the temperature's data: refused without it
    result = runner.invoke(app, ["pack", str(out), str(tmp_path / "x.safetensors"), "--class-bias"])
    assert result.exit_code != 0 and "class biases" in result.output
