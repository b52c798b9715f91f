"""Figures (matplotlib + seaborn): confusion matrix, training curves, class distribution, sample grid.

Each function returns a matplotlib Figure; :func:`save_figure` writes it atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fer_utils.core.atomic import atomic_path
from fer_utils.data.faceset import FaceSet, LoadedDataset
from fer_utils.faces.drawing import annotate_image as annotate_image  # re-exported: the drawing functions together
from fer_utils.faces.drawing import save_pil as save_pil
from fer_utils.train.evaluation import EvaluationReport


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


def reliability_figure(report: EvaluationReport, title: str | None = None) -> Figure:
    """Reliability diagram: accuracy against confidence per bin (the diagonal is perfect calibration),
    with how many faces fall in each bin below it."""
    from fer_utils.train.evaluation import reliability_bins

    table = reliability_bins(report.labels, report.probabilities)
    width = float(table.high.iloc[0] - table.low.iloc[0])
    centres = (table.low + table.high) / 2
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5.5, 6), height_ratios=(3, 1), sharex=True)
    ax.bar(centres, table.accuracy.fillna(0), width=width * 0.95, color="#4c72b0", label="accuracy in the bin")
    ax.plot(centres, table.confidence, "o", color="#dd8452", label="mean confidence in the bin")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfectly calibrated")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    ax.set_title(title or f"{report.split or 'evaluation'}: ECE {report.ece:.3f}, NLL {report.nll:.3f}")
    ax_n.bar(centres, table.n, width=width * 0.95, color="gray")
    ax_n.set(xlabel="confidence (top probability)", ylabel="faces")
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
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
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
    """A grid of example faces, one row per class present (a subset of one class is one row)."""
    rng = np.random.default_rng(seed)
    present = np.unique(faces.labels)
    fig, axes = plt.subplots(len(present), per_class, figsize=(per_class * 1.1, len(present) * 1.2), squeeze=False)
    for row, k in enumerate(present):
        index = np.flatnonzero(faces.labels == k)
        chosen = rng.choice(index, size=min(per_class, len(index)), replace=False)
        for col, ax in enumerate(axes[row]):
            ax.axis("off")
            if col < len(chosen):
                ax.imshow(faces.images[chosen[col]], cmap="gray", vmin=0, vmax=255)
        axes[row][0].set_title(faces.classes[k], loc="left", fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` as an image atomically and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


def probability_bars(ax, probabilities: dict[str, float], highlight: str | None = None) -> None:
    """Horizontal bars of every class's probability on ``ax``; the top class (or ``highlight``) in colour."""
    names = list(probabilities)
    values = [probabilities[n] for n in names]
    top = highlight or max(probabilities, key=probabilities.get)
    colors = ["tab:orange" if n == top else "tab:blue" for n in names]
    ax.barh(names, values, color=colors)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.text(min(v + 0.02, 0.85), i, f"{v:.0%}", va="center", fontsize=8)
    ax.set_xlabel("probability")


def face_prediction_figure(
    face: np.ndarray,
    probabilities: dict[str, float],
    cam: np.ndarray | None = None,
    opacity: float = 0.5,
    title: str | None = None,
) -> Figure:
    """The face (with its Grad-CAM overlay when given) next to the probability of every class."""
    from fer_utils.model.gradcam import overlay

    panels = 3 if cam is not None else 2
    fig, axes = plt.subplots(
        1, panels, figsize=(3.2 * panels, 3), gridspec_kw={"width_ratios": [1] * (panels - 1) + [1.4]}
    )
    axes[0].imshow(face, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title(title or "face")
    if cam is not None:
        axes[1].imshow(overlay(face, cam, opacity))
        axes[1].set_title(f"Grad-CAM: {max(probabilities, key=probabilities.get)}")
    for ax in axes[:-1]:
        ax.axis("off")
    probability_bars(axes[-1], probabilities)
    fig.tight_layout()
    return fig


def photo_prediction_figure(result, image: np.ndarray | None = None) -> Figure:
    """The photo, large, with boxes, landmarks and numbered labels (faces numbered left to right),
    and below it one probability chart per face."""
    image = result.image if image is None else image
    n = len(result.faces)
    columns = max(1, min(n, 4))
    chart_rows = -(-n // columns)
    width = max(6.0, 3.0 * columns)
    photo_height = min(6.0, width * image.shape[0] / image.shape[1]) + 0.4 if image is not None else 4.0
    fig = plt.figure(figsize=(width, photo_height + 2.4 * chart_rows), layout="constrained")
    grid = fig.add_gridspec(1 + chart_rows, columns, height_ratios=[photo_height] + [2.4] * chart_rows)
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(image, cmap="gray" if image is not None and image.ndim == 2 else None)
    ax.axis("off")
    ax.set_title(Path(result.source).name if n else f"{Path(result.source).name}: {result.reason}")
    for i, face in enumerate(result.faces):
        if face.box is not None:
            ax.add_patch(
                plt.Rectangle((face.box.x, face.box.y), face.box.w, face.box.h, fill=False, color="orange", lw=2)
            )
            ax.text(  # inside the box's top edge: a label above the box would run into the title
                face.box.x + 2,
                face.box.y + 2,
                f"{i}: {face.label} {face.score:.0%}",
                color="black",
                backgroundcolor="orange",
                fontsize=9,
                va="top",
                clip_on=True,
            )
            if face.box.landmarks:  # YuNet: eyes, nose tip, mouth corners
                xs, ys = zip(*face.box.landmarks, strict=True)
                ax.plot(xs, ys, "o", color="cyan", markersize=3)
        chart = fig.add_subplot(grid[1 + i // columns, i % columns])
        probability_bars(chart, face.probabilities)
        chart.set_title(f"face {i}: {face.label}")
    return fig


def misclassified_gallery_figure(
    faces: FaceSet,
    probabilities: np.ndarray,
    cams: np.ndarray | None = None,
    limit: int = 12,
    columns: int = 6,
    opacity: float = 0.5,
) -> Figure:
    """The most confidently wrong faces: each with true and predicted label (and Grad-CAM overlay).

    ``probabilities`` (N, C) are the model's outputs for ``faces``; ``cams`` (N, H, W) optional maps.
    """
    from fer_utils.model.gradcam import overlay

    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != faces.labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:limit]
    rows = max(1, -(-len(wrong) // columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(columns * 1.7, rows * 2.3 + 0.5), squeeze=False, layout="constrained"
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), wrong, strict=False):
        face = faces.images[i]
        ax.imshow(
            overlay(face, cams[i], opacity) if cams is not None else face, cmap=None if cams is not None else "gray"
        )
        ax.set_title(
            f"true {faces.classes[faces.labels[i]]}\npred {faces.classes[predicted[i]]} "
            f"{probabilities[i, predicted[i]]:.0%}",
            fontsize=8,
        )
    fig.suptitle(
        f"{len(np.flatnonzero(predicted != faces.labels))} of {len(faces)} misclassified; most confident shown"
    )
    return fig


def normalized_display_range(transform) -> tuple[float, float]:
    """The values a transform's ``Normalize`` step gives black and white pixels: showing every
    augmented face on this one range keeps brightness and contrast changes visible (rescaling each
    face to its own min and max would undo them)."""
    from torchvision.transforms import v2

    steps = transform.transforms if isinstance(transform, v2.Compose) else [transform]
    norm = next((step for step in steps if isinstance(step, v2.Normalize)), None)
    if norm is None:
        return 0.0, 1.0
    return (0 - norm.mean[0]) / norm.std[0], (1 - norm.mean[0]) / norm.std[0]


def augmentation_grid_figure(face: np.ndarray, transform, n: int = 8, seed: int = 0) -> Figure:
    """The original face and ``n`` random augmentations of it, all shown on the original's grey
    scale (black is black, white is white), so a brighter or flatter face looks brighter or flatter."""
    import torch

    torch.manual_seed(seed)
    tensor = torch.from_numpy(np.ascontiguousarray(face)).unsqueeze(0)
    low, high = normalized_display_range(transform)
    fig, axes = plt.subplots(1, n + 1, figsize=(1.4 * (n + 1), 1.7))
    axes[0].imshow(face, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("original", fontsize=8)
    for ax in axes[1:]:
        ax.imshow(transform(tensor)[0].numpy(), cmap="gray", vmin=low, vmax=high)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


def video_frame_figure(image_bgr: np.ndarray, analysed, classes: Sequence[str]) -> Figure:
    """One analysed video frame: the frame with each face's box, track and smoothed label, and
    beside it each face's raw (pale, wide) and smoothed (solid, narrow) probabilities."""
    import cv2

    from fer_utils.predict.video_outputs import draw_tracks

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.2), gridspec_kw={"width_ratios": [1.6, 1]})
    axes[0].imshow(cv2.cvtColor(draw_tracks(image_bgr.copy(), analysed.faces), cv2.COLOR_BGR2RGB))
    axes[0].set_title(f"frame {analysed.frame}, {analysed.time_s:.2f} s", fontsize=10)
    axes[0].axis("off")
    width = 0.8 / max(len(analysed.faces), 1)
    for k, face in enumerate(analysed.faces):
        x = np.arange(len(classes)) + k * width
        axes[1].bar(x, [face.raw_probabilities[c] for c in classes], width, alpha=0.3, color=f"C{k}")
        axes[1].bar(x, [face.probabilities[c] for c in classes], width * 0.5, color=f"C{k}", label=f"#{face.track}")
    axes[1].set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=45, fontsize=8)
    axes[1].set_ylim(0, 1)
    if analysed.faces:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig
