"""Figures (matplotlib + seaborn): confusion matrix, training curves, class distribution, sample grid.

Each function returns a matplotlib Figure; :func:`save_figure` writes it atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from fer_utils.atomic import atomic_path
from fer_utils.data.faceset import FaceSet, LoadedDataset
from fer_utils.evaluation import EvaluationReport


def confusion_matrix_figure(report: EvaluationReport, normalize: bool = True, title: str | None = None) -> Figure:
    """Heatmap of the confusion matrix; ``normalize`` shows each true class's row as fractions."""
    matrix = np.nan_to_num(report.confusion(normalize=normalize))
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    sns.heatmap(
        matrix,
        annot=True,
        fmt=".2f" if normalize else "d",
        cmap="Blues",
        cbar=False,
        square=True,
        xticklabels=report.classes,
        yticklabels=report.classes,
        vmin=0,
        ax=ax,
    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        title or f"{report.split or 'evaluation'}: accuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f}"
    )
    fig.tight_layout()
    return fig


def training_curves_figure(history: pd.DataFrame) -> Figure:
    """Loss and accuracy per epoch, train vs validation, with the best epoch marked."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(history["epoch"], history["train_loss"], "o-", label="train")
    ax_loss.plot(history["epoch"], history["val_loss"], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(history["epoch"], history["train_accuracy"], "o-", label="train")
    ax_acc.plot(history["epoch"], history["val_accuracy"], "o-", label="validation")
    best = history.loc[history["val_accuracy"].idxmax()]
    ax_acc.axvline(best["epoch"], color="gray", ls="--", lw=1, label=f"best {best['val_accuracy']:.3f}")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def class_distribution_figure(dataset: LoadedDataset) -> Figure:
    """Bar chart of faces per class in every split (shows imbalance such as FER2013's rare disgust)."""
    table = dataset.class_count_table().drop(index="total")
    long = table.reset_index().melt(id_vars="class", var_name="split", value_name="faces")
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.barplot(data=long, x="class", y="faces", hue="split", ax=ax)
    ax.set_title(f"class distribution: {Path(dataset.source).name}")
    fig.tight_layout()
    return fig


def sample_grid_figure(faces: FaceSet, per_class: int = 6, seed: int = 0) -> Figure:
    """A grid of example faces, one row per class."""
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(
        len(faces.classes), per_class, figsize=(per_class * 1.1, len(faces.classes) * 1.2), squeeze=False
    )
    for row, name in enumerate(faces.classes):
        index = np.flatnonzero(faces.labels == row)
        chosen = rng.choice(index, size=min(per_class, len(index)), replace=False) if len(index) else []
        for col, ax in enumerate(axes[row]):
            ax.axis("off")
            if col < len(chosen):
                ax.imshow(faces.images[chosen[col]], cmap="gray", vmin=0, vmax=255)
        axes[row][0].set_title(name, loc="left", fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` as an image atomically and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
