"""Evaluation: accuracy, macro-F1, per-class precision/recall/F1 and confusion matrices (scikit-learn)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)
from torch import nn

from fer_utils.core.atomic import write_text_atomic
from fer_utils.core.metadata import CheckpointSource
from fer_utils.core.outputs import check_outputs
from fer_utils.data.faceset import FaceSet
from fer_utils.model.assembly import load_model
from fer_utils.model.calibration import base_model, fit_temperature, scaled_probabilities
from fer_utils.model.checkpoints import Checkpoint, checkpoint_name, update_checkpoint_metadata
from fer_utils.model.devices import resolve_device
from fer_utils.model.probabilities import model_probabilities
from fer_utils.runtime.description import ModelDescription
from fer_utils.runtime.preprocess import MAX_BATCH_INPUTS

ECE_BINS = 15
"""Equal-width confidence bins of the expected calibration error (the usual choice, Guo et al. 2017)."""

COVERAGES = (0.5, 0.8, 0.9)
"""Shares of faces kept, most confident first, at which selective accuracy is reported."""


SELECTION_SPLIT = "val"
"""The split every epoch, ensemble member and temperature was chosen on (FER2013 PublicTest)."""


def optimism_note(split: str) -> str | None:
    """A warning when ``split`` is the selection split, whose score overstates new faces; else None."""
    if split != SELECTION_SPLIT:
        return None
    return (
        f"'{split}' is the selection split: the epochs, ensemble members and temperature were chosen on it, "
        "so its scores are optimistic; the held-back test split (FER2013 PrivateTest) gives the honest figure"
    )


def reliability_bins(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """Per confidence bin: how many faces, their mean confidence and their accuracy (a reliability diagram's data)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        rows.append(
            {
                "low": edges[b],
                "high": edges[b + 1],
                "n": int(inside.sum()),
                "confidence": float(confidence[inside].mean()) if inside.any() else np.nan,
                "accuracy": float(correct[inside].mean()) if inside.any() else np.nan,
            }
        )
    return pd.DataFrame(rows)


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over confidence bins, weighted by the faces in each: 0.05 means a
    face shown as 80 % sure is right about 75 or 85 % of the time."""
    table = reliability_bins(labels, probabilities, bins)
    used = table[table.n > 0]
    return float((used.n * (used.accuracy - used.confidence).abs()).sum() / max(1, len(labels)))


def selective_accuracy(labels: np.ndarray, probabilities: np.ndarray, coverage: float) -> float:
    """Accuracy on the ``coverage`` share of faces the model is most confident about."""
    keep = max(1, round(coverage * len(labels)))
    order = np.argsort(-probabilities.max(axis=1), kind="stable")[:keep]
    return float((probabilities[order].argmax(axis=1) == labels[order]).mean())


def macro_f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Macro-averaged F1 over the classes that occur in ``labels``."""
    return float(f1_score(labels, predictions, average="macro", labels=np.unique(labels), zero_division=0))


@dataclass
class EvaluationReport:
    """Metrics of one model on one labelled FaceSet, with the raw predictions kept for analysis."""

    classes: tuple[str, ...]
    labels: np.ndarray
    probabilities: np.ndarray
    tta: str = "none"
    split: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        return float(accuracy_score(self.labels, self.predictions))

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the classes present in the labels (a dataset without, say, disgust is not
        penalised for it; predicting an absent class still costs precision elsewhere)."""
        return macro_f1(self.labels, self.predictions)

    @property
    def ece(self) -> float:
        """Expected calibration error over ``ECE_BINS`` bins (see ``expected_calibration_error``)."""
        return expected_calibration_error(self.labels, self.probabilities)

    @property
    def nll(self) -> float:
        """Mean negative log-likelihood of the true class (lower is better; punishes confident mistakes)."""
        return float(log_loss(self.labels, self.probabilities, labels=self._indices))

    @property
    def brier(self) -> float:
        """Mean squared distance between the probabilities and the one-hot truth (0 is perfect, 2 the worst)."""
        one_hot = np.eye(len(self.classes))[self.labels]
        return float(((self.probabilities - one_hot) ** 2).sum(axis=1).mean())

    def selective(self) -> dict[str, float]:
        """Accuracy when only the most confident faces are kept, at each of ``COVERAGES``."""
        return {f"{c:.0%}": selective_accuracy(self.labels, self.probabilities, c) for c in COVERAGES}

    @property
    def _indices(self) -> np.ndarray:
        return np.arange(len(self.classes))

    def per_class(self) -> pd.DataFrame:
        """Precision, recall, F1 and support of every class."""
        p, r, f, s = precision_recall_fscore_support(
            self.labels, self.predictions, labels=self._indices, zero_division=0
        )
        return pd.DataFrame(
            {"precision": p, "recall": r, "f1": f, "support": s}, index=pd.Index(self.classes, name="class")
        )

    def confusion(self, normalize: bool = False) -> np.ndarray:
        """Confusion matrix, rows = true class; ``normalize`` divides each row by its total (recall)."""
        return confusion_matrix(
            self.labels, self.predictions, labels=self._indices, normalize="true" if normalize else None
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything a JSON report holds: metrics, per-class table, both confusion matrices, class order."""
        per_class = self.per_class()
        return {
            "split": self.split,
            "tta": self.tta,
            "n": len(self.labels),
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "calibration": {"ece": self.ece, "ece_bins": ECE_BINS, "nll": self.nll, "brier": self.brier},
            "selective_accuracy": self.selective(),
            "classes": list(self.classes),
            "per_class": {
                c: {k: (int(v) if k == "support" else float(v)) for k, v in row.items()}
                for c, row in per_class.to_dict(orient="index").items()
            },
            "confusion_matrix": self.confusion().tolist(),
            "confusion_matrix_normalized": np.nan_to_num(self.confusion(normalize=True)).round(4).tolist(),
            **self.info,
        }

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def summary(self) -> str:
        """A short text report: headline metrics and the per-class table."""
        head = (
            f"{self.split or 'data'}: {len(self.labels)} faces, accuracy {self.accuracy:.4f}, "
            f"macro-F1 {self.macro_f1:.4f} (TTA: {self.tta})\n"
            f"calibration: ECE {self.ece:.4f} ({ECE_BINS} bins), NLL {self.nll:.4f}, Brier {self.brier:.4f}; "
            "accuracy on the most confident "
            + ", ".join(f"{k} {v:.4f}" for k, v in self.selective().items())
            + "\n(ECE: how far the stated confidence is from the accuracy, on average; 0 means a face called "
            "'80 % happy' is right 80 % of the time. `fer calibrate` lowers it; notebook 05 explains it.)"
        )
        return head + "\n" + self.per_class().round(3).to_string()


def evaluate_model(
    model: nn.Module,
    faces: FaceSet,
    description: ModelDescription,
    batch_size: int = MAX_BATCH_INPUTS,
    split: str = "",
) -> EvaluationReport:
    """Run ``model`` over ``faces``, prepared as ``description`` says (input size, normalization,
    TTA views: a checkpoint's ``.description``), and score it against their labels."""
    probabilities = model_probabilities(model, faces.images, description, batch_size)
    return EvaluationReport(faces.classes, faces.labels, probabilities, description.tta, split)


def evaluate_checkpoint(
    checkpoint: CheckpointSource | tuple[nn.Module, Checkpoint],
    faces: FaceSet,
    tta: str = "none",
    batch_size: int = MAX_BATCH_INPUTS,
    split: str = "",
    device: str = "auto",
) -> EvaluationReport:
    """Evaluate a saved model (or several, averaged as an ensemble) on ``faces`` on ``device``;
    refuses a checkpoint trained on another class list. A model passed in stays where it is."""
    if isinstance(checkpoint, tuple) and isinstance(checkpoint[0], nn.Module):
        model, ckpt = checkpoint
    else:
        model, ckpt = load_model(checkpoint, expect_classes=faces.classes)
        model = model.to(resolve_device(device))
    report = evaluate_model(model, faces, ckpt.description.with_tta(tta), batch_size, split)
    report.info["checkpoint"] = checkpoint_name(ckpt)
    return report


def two_fold_halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` faces' indices in two random halves: the split every two-fold calibration check uses."""
    order = np.random.default_rng(seed).permutation(n)
    return order[: n // 2], order[n // 2 :]


def cross_fitted_probabilities(probabilities: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Temperature-scaled probabilities where each half of the faces is scaled by a temperature
    fitted on the other half: calibration measured on faces the fit never saw (two-fold)."""
    halves = two_fold_halves(len(labels), seed)
    scaled = np.empty_like(probabilities, dtype=np.float32)
    for held, fit_on in (halves, halves[::-1]):
        scaled[held] = scaled_probabilities(probabilities[held], fit_temperature(probabilities[fit_on], labels[fit_on]))
    return scaled


@dataclass
class CalibrationResult:
    """What ``calibrate_checkpoint`` fitted and measured."""

    temperature: float
    before: EvaluationReport
    after: EvaluationReport
    held_out: EvaluationReport
    """The faces scaled by a temperature fitted on the other half of them (``cross_fitted_probabilities``)."""
    out: Path

    def summary(self) -> str:
        """One line per report: ECE and NLL before, after, and on faces the fit did not see."""
        rows = [
            ("before", self.before),
            (f"after (T = {self.temperature:.3f})", self.after),
            ("held out (two-fold)", self.held_out),
        ]
        return "\n".join(
            f"{name:>22}: ECE {r.ece:.4f}, NLL {r.nll:.4f}, Brier {r.brier:.4f}, accuracy {r.accuracy:.4f}"
            for name, r in rows
        )


def calibrate_checkpoint(
    checkpoint: str | os.PathLike,
    faces: FaceSet,
    out: str | os.PathLike,
    *,
    split: str = "",
    overwrite: bool = False,
    device: str = "auto",
    batch_size: int = MAX_BATCH_INPUTS,
) -> CalibrationResult:
    """Fit a temperature for ``checkpoint`` on ``faces`` (its selection split) and write a copy of
    the checkpoint that carries it to ``out``; the input file is never changed.

    The fit starts from the network itself, so a checkpoint that already has a temperature is refitted.
    """
    check_outputs({"calibrated checkpoint": out}, inputs=[checkpoint], overwrite=overwrite)
    model, ckpt = load_model(checkpoint, expect_classes=faces.classes)
    model = base_model(model).to(resolve_device(device))
    before = evaluate_model(model, faces, ckpt.description, batch_size=batch_size)
    before.split = split
    temperature = fit_temperature(before.probabilities, before.labels)
    after = EvaluationReport(faces.classes, faces.labels, scaled_probabilities(before.probabilities, temperature))
    held_out = EvaluationReport(
        faces.classes, faces.labels, cross_fitted_probabilities(before.probabilities, faces.labels)
    )
    fitted = {
        "split": split,
        "faces": len(faces.labels),
        "ece_before": round(before.ece, 4),
        "ece_after": round(after.ece, 4),
        "ece_held_out": round(held_out.ece, 4),
        "nll_before": round(before.nll, 4),
        "nll_after": round(after.nll, 4),
    }
    path = update_checkpoint_metadata(checkpoint, {"temperature": temperature, "calibration": fitted}, out=out)
    return CalibrationResult(temperature, before, after, held_out, path)
