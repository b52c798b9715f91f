"""The end of a training run, as the library's own step: figures, the final evaluation (with and
without TTA) on the held-out split, ``metrics.json``, and the scores written into the best
checkpoint's metadata. ``fer train`` calls it; so can a notebook after ``train()``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer_utils.core.atomic import write_text_atomic
from fer_utils.course.figures import (
    class_distribution_figure,
    confusion_matrix_figure,
    sample_grid_figure,
    save_figure,
    training_curves_figure,
)
from fer_utils.data.faceset import FaceSet, LoadedDataset
from fer_utils.model.checkpoints import update_checkpoint_metadata
from fer_utils.train.evaluation import EvaluationReport, evaluate_checkpoint
from fer_utils.train.loop import TrainResult

REPORTED_FIELDS = ("split", "tta", "n", "accuracy", "macro_f1")
"""What the best checkpoint's metadata keeps of each final evaluation."""


@dataclass
class RunReport:
    """What ``write_run_report`` evaluated and wrote."""

    report: EvaluationReport  # the final evaluation with the requested TTA
    metrics: dict[str, Any]
    written: list[Path] = field(default_factory=list)

    def saved_line(self, result: TrainResult) -> str:
        return f"saved: {result.best_checkpoint} (best epoch {result.best_epoch}), " + ", ".join(
            str(p) for p in self.written
        )


def write_run_report(
    result: TrainResult, dataset: LoadedDataset, train_set: FaceSet, val_set: FaceSet, tta: str = "flip"
) -> RunReport:
    """Evaluate the best epoch on the dataset's held-out split (its test split when it has one,
    else the validation faces), without TTA and with ``tta``; save figures in ``figures/``, the
    scores in ``metrics.json`` and in the best checkpoint's metadata."""
    out = result.out_dir
    figures = out / "figures"
    save_figure(training_curves_figure(result.history), figures / "training_curves.png")
    save_figure(class_distribution_figure(dataset), figures / "class_distribution.png")
    save_figure(sample_grid_figure(train_set), figures / "samples.png")
    split = dataset.default_eval_split()
    eval_set, split = (dataset.split(split), split) if split != "all" else (val_set, "val")
    metrics: dict[str, Any] = {}
    final = None
    for mode in dict.fromkeys(("none", tta)):
        report = evaluate_checkpoint((result.model, result.checkpoint), eval_set, tta=mode, split=split)
        metrics[f"tta_{mode}"] = report.to_dict()
        if mode == tta:
            final = report
            save_figure(confusion_matrix_figure(report), figures / "confusion_matrix.png")
    metrics["best_epoch"] = result.best_epoch
    evaluation = {
        key: {k: value[k] for k in REPORTED_FIELDS} for key, value in metrics.items() if key.startswith("tta_")
    }
    update_checkpoint_metadata(result.best_checkpoint, {"evaluation": evaluation})
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return RunReport(final, metrics, [out / "metrics.json", out / "history.csv", figures])
