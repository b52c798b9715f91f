"""Temperature scaling: the fit finds the right temperature, the checkpoint carries it, every
path that shows probabilities (evaluation, Predictor in PyTorch and ONNX Runtime) applies it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import save_lite0
from fer_utils.cli import main
from fer_utils.core.errors import FERCheckpointError, FERError
from fer_utils.model.assembly import load_model
from fer_utils.model.calibration import (
    TemperatureScaled,
    base_model,
    fit_temperature,
    scaled_probabilities,
)
from fer_utils.model.checkpoints import read_checkpoint_meta, update_checkpoint_metadata
from fer_utils.model.factory import Ensemble
from fer_utils.train.evaluation import (
    EvaluationReport,
    calibrate_checkpoint,
    cross_fitted_probabilities,
    evaluate_checkpoint,
    two_fold_halves,
)


def _overconfident(n: int = 4000, true_temperature: float = 2.0, seed: int = 0):
    """Probabilities softmax(z) of a model whose labels really follow softmax(z / 2): overconfident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, 7))
    truth = torch.softmax(torch.from_numpy(logits / true_temperature), dim=1).numpy()
    labels = np.array([rng.choice(7, p=p / p.sum()) for p in truth])
    return torch.softmax(torch.from_numpy(logits), dim=1).numpy().astype(np.float32), labels


def test_fit_recovers_the_temperature_and_lowers_the_calibration_error():
    probabilities, labels = _overconfident()
    temperature = fit_temperature(probabilities, labels)
    assert temperature == pytest.approx(2.0, rel=0.1)
    before = EvaluationReport(tuple("abcdefg"), labels, probabilities)
    after = EvaluationReport(tuple("abcdefg"), labels, scaled_probabilities(probabilities, temperature))
    assert after.ece < before.ece / 2
    assert after.nll < before.nll
    assert (after.predictions == before.predictions).all(), "a temperature never changes a prediction"


def _overconfident_checkpoint(path):
    """An untrained Lite0 (fixed seed) with its classifier at 30x its usual scale: it calls every
    face "sad" with confidence 0.5-0.99, so the fit deterministically lands at its upper bound
    (about 20). The plain fixture's near-uniform outputs let the fit land anywhere, even at 1.0001."""
    from fer_utils.model.factory import build_model, classifier_layer

    torch.manual_seed(0)
    model = build_model("efficientnet-lite0").eval()
    with torch.no_grad():
        classifier_layer(model).weight.mul_(30)
    return save_lite0(path, model)


def test_calibrated_copy_carries_the_temperature_and_every_path_applies_it(tmp_path, small_faces):
    checkpoint = _overconfident_checkpoint(tmp_path / "overconfident.safetensors")
    original = checkpoint.read_bytes()
    out = tmp_path / "calibrated.safetensors"
    result = calibrate_checkpoint(checkpoint, small_faces, out, split="val")
    assert checkpoint.read_bytes() == original, "the input checkpoint must never change"
    meta = read_checkpoint_meta(out)
    assert meta["temperature"] == result.temperature
    assert abs(result.temperature - 1) > 0.05, "the test needs a temperature that visibly changes probabilities"
    assert meta["calibration"]["faces"] == len(small_faces.labels)

    model, _ = load_model(out)
    assert isinstance(model, TemperatureScaled)
    plain = evaluate_checkpoint(checkpoint, small_faces).probabilities
    calibrated = evaluate_checkpoint(out, small_faces).probabilities
    np.testing.assert_allclose(calibrated, scaled_probabilities(plain, result.temperature), atol=1e-4)

    from fer_utils.predict.predictor import Predictor

    for runtime in ("torch", "onnx"):
        predictor = Predictor.from_checkpoint(out, runtime=runtime, device="cpu")
        np.testing.assert_allclose(predictor.predict_arrays(small_faces.images), calibrated, atol=1e-4)


def test_calibrate_refuses_to_replace_its_input(untrained_checkpoint, small_faces):
    with pytest.raises(FERError, match="input"):
        calibrate_checkpoint(untrained_checkpoint, small_faces, untrained_checkpoint, overwrite=True)


def test_an_impossible_temperature_is_never_written_nor_loaded(tmp_path, untrained_checkpoint):
    with pytest.raises(FERCheckpointError, match="temperature"):
        update_checkpoint_metadata(untrained_checkpoint, {"temperature": -1.0}, out=tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_a_member_keeps_no_temperature_inside_an_ensemble(tmp_path, untrained_checkpoint, capsys):
    calibrated = update_checkpoint_metadata(untrained_checkpoint, {"temperature": 2.0}, out=tmp_path / "t.safetensors")
    ensemble, _ = load_model([calibrated, untrained_checkpoint])
    assert isinstance(ensemble, Ensemble)
    assert not any(isinstance(m, TemperatureScaled) for m in ensemble.members)
    assert "not used inside an ensemble" in capsys.readouterr().out
    assert base_model(ensemble) is ensemble


def test_cli_calibrate_prints_the_fit_and_writes_a_loadable_copy(tmp_path, untrained_checkpoint, capsys):
    out = tmp_path / "cal.safetensors"
    code = main(["calibrate", "--data", "synthetic:0.05", "--checkpoint", str(untrained_checkpoint), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "temperature" in printed and "held out (two-fold)" in printed
    assert 0.05 <= read_checkpoint_meta(out)["temperature"] <= 20


def test_two_fold_check_scales_each_half_with_a_temperature_fitted_on_the_other():
    # the held-out ECE `fer calibrate` reports: every face once, each half fitted on the other half only
    first, second = two_fold_halves(101, seed=3)
    assert sorted(np.concatenate([first, second]).tolist()) == list(range(101))
    assert (first == two_fold_halves(101, seed=3)[0]).all()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3))
    logits[np.arange(200), labels] += 2.0
    probabilities = torch.softmax(torch.tensor(logits * 3.0), 1).numpy()  # over-confident
    scaled = cross_fitted_probabilities(probabilities, labels)
    fit_on, held = two_fold_halves(200)
    expected = scaled_probabilities(probabilities[held], fit_temperature(probabilities[fit_on], labels[fit_on]))
    assert np.allclose(scaled[held], expected, atol=1e-6)
