"""Figures a learner can read: no title or label drawn over another panel's image, nothing cut
off at the figure's edge (checked on the rendered text boxes, as a reader would see them)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.image import AxesImage

from fer_utils.core.labels import EMOTIONS
from fer_utils.course.figures import misclassified_gallery_figure, photo_prediction_figure
from fer_utils.faces.detection import FaceBox
from fer_utils.faces.results import FaceResult, ImageResult


def collisions(fig) -> list[str]:
    """Texts whose rendered box overlaps an image in another panel, or leaves the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    images = [
        (ax, ax.get_window_extent(renderer)) for ax in fig.axes if any(isinstance(a, AxesImage) for a in ax.images)
    ]
    texts = [*fig.texts, *([fig._suptitle] if fig._suptitle else [])]
    ticks: list = []
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        if ax.axison:
            ticks += [*ax.get_xticklabels(), *ax.get_yticklabels()]
            texts += [*ax.get_xticklabels(), *ax.get_yticklabels(), ax.xaxis.label, ax.yaxis.label]
    texts = list(dict.fromkeys(texts))  # the suptitle is also one of fig.texts
    found = []
    for text in texts:
        if not text.get_visible() or not text.get_text().strip():
            continue
        box = text.get_window_extent(renderer)
        if box.width == 0:
            continue
        owner = text.axes
        for ax, extent in images:
            if ax is not owner and box.overlaps(extent):
                found.append(f"{text.get_text()!r} overlaps the image of panel {fig.axes.index(ax)}")
        if box.x0 < page.x0 - 1 or box.x1 > page.x1 + 1 or box.y0 < page.y0 - 1 or box.y1 > page.y1 + 1:
            found.append(f"{text.get_text()!r} runs off the figure")
    labels = [t for t in texts if t.get_visible() and t.get_text().strip() and t not in ticks]
    boxes = [t.get_window_extent(renderer) for t in labels]
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            if boxes[i].width and boxes[j].width and boxes[i].overlaps(boxes[j]):
                found.append(f"{labels[i].get_text()!r} and {labels[j].get_text()!r} overlap")
    return found


def test_the_mistake_gallery_keeps_every_label_clear_of_the_faces():
    from fer_utils.data.synthetic import synthetic_faces

    faces = synthetic_faces(40, seed=0)
    probabilities = np.random.default_rng(0).dirichlet(np.ones(len(faces.classes)), len(faces))
    fig = misclassified_gallery_figure(faces, probabilities, limit=12, columns=6)
    try:
        assert collisions(fig) == []
    finally:
        plt.close(fig)


@pytest.mark.parametrize("n_faces", [1, 4, 6])
def test_a_group_photo_is_drawn_large_with_labels_clear_of_the_title(n_faces):
    rng = np.random.default_rng(n_faces)
    image = rng.integers(0, 256, (480, 960), dtype=np.uint8)
    faces = []
    for i in range(n_faces):
        p = rng.dirichlet(np.ones(len(EMOTIONS)))
        box = FaceBox(20 + i * 150, 0 if i == 0 else 40, 120, 120, 0.9)  # the first touches the top edge
        faces.append(
            FaceResult(
                box, EMOTIONS[int(p.argmax())], float(p.max()), dict(zip(EMOTIONS, p, strict=True)), image[:48, :48]
            )
        )
    result = ImageResult("group.jpg", 960, 480, faces, detected=True, image=image)
    fig = photo_prediction_figure(result)
    try:
        assert collisions(fig) == []
        photo = fig.axes[0].get_window_extent()
        assert photo.width >= 0.6 * fig.bbox.width  # the photo, not the charts, takes the width
    finally:
        plt.close(fig)


def _panel_pixels(fig) -> list[np.ndarray]:
    """What each image panel shows: its data mapped through its own colour scale (0..1)."""
    return [np.asarray(im.norm(im.get_array()), dtype=float) for ax in fig.axes for im in ax.images]


@pytest.mark.parametrize("name", ["brightness", "contrast"])
def test_the_augmentation_sliders_change_what_the_faces_look_like(name):
    from fer_utils.course.figures import augmentation_grid_figure
    from fer_utils.data import synthetic_faces
    from fer_utils.train.transforms import Augmentation, augmentation_transform

    face = synthetic_faces(1, seed=3).images[0]
    shown = {}
    for strength in (0.0, 1.0):
        options = dict.fromkeys(("crop", "rotation", "brightness", "contrast", "erasing"), 0.0) | {name: strength}
        fig = augmentation_grid_figure(
            face, augmentation_transform(48, Augmentation(**options, flip=False)), n=8, seed=1
        )
        shown[strength] = _panel_pixels(fig)[1:]  # the augmented panels, as displayed
        plt.close(fig)
    # at strength 0 every panel shows the face as it is; at 1 the jitter must be visible on screen
    moved = [float(np.abs(a - b).mean()) for a, b in zip(shown[0.0], shown[1.0], strict=True)]
    assert max(moved) > 0.05, moved


def test_a_gallery_of_one_class_draws_one_row():
    from fer_utils.course.figures import sample_grid_figure
    from fer_utils.data import synthetic_faces

    faces = synthetic_faces(3, seed=7)
    fig = sample_grid_figure(faces.subset(faces.labels == EMOTIONS.index("disgust")), per_class=3)
    assert len(fig.axes) == 3 and fig.axes[0].get_title(loc="left") == "disgust"
    plt.close(fig)


def test_training_curves_mark_whole_epochs():
    import pandas as pd

    from fer_utils.course.figures import training_curves_figure

    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [1.5, 1.2, 1.0],
            "val_loss": [1.6, 1.4, 1.3],
            "train_accuracy": [0.3, 0.4, 0.5],
            "val_accuracy": [0.3, 0.35, 0.4],
        }
    )
    fig = training_curves_figure(history)
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    plt.close(fig)
