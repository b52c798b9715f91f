import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_utils.core.labels import EMOTIONS
from fer_utils.course.figures import (
    class_distribution_figure,
    confusion_matrix_figure,
    sample_grid_figure,
    save_figure,
    training_curves_figure,
)
from fer_utils.data import load_dataset
from fer_utils.train.evaluation import EvaluationReport


def report_with(labels, predicted):
    probs = np.eye(7)[predicted] * 0.9 + 0.1 / 7
    return EvaluationReport(EMOTIONS, np.array(labels), probs, split="val")


def test_metrics_match_hand_counts():
    report = report_with([0, 0, 3, 3, 6], [0, 3, 3, 3, 6])
    assert report.accuracy == pytest.approx(0.8)
    table = report.per_class()
    assert table.loc["angry", "recall"] == pytest.approx(0.5)
    assert table.loc["happy", "precision"] == pytest.approx(2 / 3)
    matrix = report.confusion()
    assert matrix[0, 3] == 1 and matrix.trace() == 4
    assert report.confusion(normalize=True)[0].tolist()[:4] == [0.5, 0, 0, 0.5]
    # macro-F1 averages the classes present in the labels (angry, happy, surprise here)
    assert report.macro_f1 == pytest.approx((2 / 3 + 0.8 + 1.0) / 3)


def test_json_report_holds_everything(tmp_path):
    path = report_with([0, 1, 2], [0, 1, 1]).save_json(tmp_path / "m.json")
    data = json.loads(path.read_text())
    assert data["classes"] == list(EMOTIONS)
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix", "confusion_matrix_normalized"} <= set(data)
    assert data["per_class"]["disgust"]["support"] == 1


def test_figures_are_written_as_images(tmp_path):
    report = report_with([0, 1, 2, 3], [0, 1, 2, 2])
    history = pd.DataFrame(
        {
            "epoch": [1, 2],
            "train_loss": [1.5, 1.0],
            "val_loss": [1.4, 1.2],
            "train_accuracy": [0.3, 0.5],
            "val_accuracy": [0.35, 0.45],
        }
    )
    dataset = load_dataset("synthetic:0.02")
    for name, fig in [
        ("cm", confusion_matrix_figure(report)),
        ("curves", training_curves_figure(history)),
        ("dist", class_distribution_figure(dataset)),
        ("grid", sample_grid_figure(dataset.splits["train"])),
    ]:
        path = save_figure(fig, tmp_path / f"{name}.png")
        assert Image.open(path).size[0] > 200


def test_calibration_metrics_match_their_definitions():
    from sklearn.metrics import log_loss

    from fer_utils.train.evaluation import EvaluationReport, expected_calibration_error, selective_accuracy

    classes = ("a", "b")
    # 10 faces at confidence 0.9 of which 9 are right, 10 at 0.6 of which 3 are right:
    # ECE = (10 * |0.9 - 0.9| + 10 * |0.3 - 0.6|) / 20 = 0.15
    probabilities = np.array([[0.9, 0.1]] * 10 + [[0.6, 0.4]] * 10)
    labels = np.array([0] * 9 + [1] + [0] * 3 + [1] * 7)
    assert expected_calibration_error(labels, probabilities) == pytest.approx(0.15)
    report = EvaluationReport(classes, labels, probabilities)
    assert report.nll == pytest.approx(log_loss(labels, probabilities))
    one_hot = np.eye(2)[labels]
    assert report.brier == pytest.approx(((probabilities - one_hot) ** 2).sum(axis=1).mean())
    assert selective_accuracy(labels, probabilities, 0.5) == pytest.approx(0.9)  # the confident half
    assert report.selective()["50%"] == pytest.approx(0.9)
    assert "ECE 0.1500" in report.summary()


def test_a_calibrated_model_has_a_small_ece():
    from fer_utils.train.evaluation import expected_calibration_error

    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 20000)
    labels = (rng.uniform(size=confidence.size) > confidence).astype(int)  # right with probability = confidence
    probabilities = np.stack([confidence, 1 - confidence], axis=1)
    assert expected_calibration_error(labels, probabilities) < 0.02
