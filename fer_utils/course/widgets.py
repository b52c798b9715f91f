"""Interactive notebook tools (ipywidgets core widgets; works with ipywidgets 7.7+ and 8, so Colab too).

- :class:`PredictionExplorer`: a slider over dataset faces showing the image, true and predicted
  label, every class's probability and the Grad-CAM overlay, with a class filter and an opacity
  slider.
- :class:`PhotoUploader`: upload your own photo and see every face's prediction and Grad-CAM.

Figures are drawn into an ``Output`` widget so they update in place.
"""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np

from fer_utils.data.faceset import FaceSet
from fer_utils.predict.predictor import Predictor

ALL = "all classes"
WRONG = "misclassified only"


def _show(fig) -> None:
    """Display a figure in the current output (widget or cell) and free it."""
    from IPython.display import display

    display(fig)
    plt.close(fig)


def uploaded_files(value) -> list[tuple[str, bytes]]:
    """(name, content) pairs from ``FileUpload.value``: a dict in ipywidgets 7, a tuple of dicts in 8."""
    if isinstance(value, dict):  # ipywidgets 7: {name: {"metadata": {...}, "content": bytes}}
        return [(name, bytes(item["content"])) for name, item in value.items()]
    return [(item["name"], bytes(item["content"])) for item in value]  # ipywidgets 8


class PredictionExplorer:
    """Browse a labelled FaceSet through a model's eyes. Display it by leaving it last in a cell."""

    def __init__(self, predictor: Predictor, faces: FaceSet, probabilities: np.ndarray | None = None) -> None:
        import ipywidgets as w

        from fer_utils.train.evaluation import evaluate_model

        self.predictor, self.faces = predictor, faces
        if probabilities is None:
            meta = predictor.checkpoint.meta
            probabilities = evaluate_model(
                predictor.model, faces, predictor.checkpoint.image_size, tuple(meta["mean"]), tuple(meta["std"])
            ).probabilities
        self.probabilities = probabilities
        self.predicted = probabilities.argmax(axis=1)
        self.class_filter = w.Dropdown(options=[ALL, WRONG, *faces.classes], value=ALL, description="show")
        self.index = w.IntSlider(
            min=0, max=max(0, len(faces) - 1), value=0, description="face", continuous_update=False
        )
        self.opacity = w.FloatSlider(
            min=0.0, max=1.0, step=0.05, value=0.5, description="CAM opacity", continuous_update=False
        )
        self.show_cam = w.Checkbox(value=True, description="Grad-CAM")
        self.status = w.Label()
        self.output = w.Output()
        for control in (self.index, self.opacity, self.show_cam):
            control.observe(lambda _: self.render(), names="value")
        self.class_filter.observe(lambda _: self._refilter(), names="value")
        self.widget = w.VBox(
            [w.HBox([self.class_filter, self.show_cam]), w.HBox([self.index, self.opacity]), self.status, self.output]
        )
        self._refilter()

    def selection(self) -> np.ndarray:
        """Indices of the faces the class filter lets through."""
        choice = self.class_filter.value
        if choice == ALL:
            return np.arange(len(self.faces))
        if choice == WRONG:
            return np.flatnonzero(self.predicted != self.faces.labels)
        return np.flatnonzero(self.faces.labels == self.faces.classes.index(choice))

    def _refilter(self) -> None:
        self.index.max = max(0, len(self.selection()) - 1)
        self.index.value = 0
        self.render()

    def render(self) -> None:
        """Redraw the current face into the output area."""
        from fer_utils.course.figures import face_prediction_figure

        chosen = self.selection()
        if not len(chosen):
            self.output.clear_output()  # at once: wait=True would keep the previous face until new output came
            self.status.value = "no faces match this filter"
            return
        self.output.clear_output(wait=True)
        i = int(chosen[min(self.index.value, len(chosen) - 1)])
        face, classes = self.faces.images[i], self.faces.classes
        probs = dict(zip(classes, self.probabilities[i].tolist(), strict=True))
        cam = self.predictor.gradcam([face], [int(self.predicted[i])])[0] if self.show_cam.value else None
        self.status.value = (
            f"{self.faces.sources[i]} | true: {classes[self.faces.labels[i]]} | predicted: "
            f"{classes[self.predicted[i]]} ({self.probabilities[i].max():.0%}) | "
            f"{len(chosen)} faces in selection"
        )
        with self.output:
            fig = face_prediction_figure(
                face, probs, cam, self.opacity.value, title=f"true: {classes[self.faces.labels[i]]}"
            )
            _show(fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


class PhotoUploader:
    """Upload a photo: every face is detected, classified and explained with Grad-CAM."""

    def __init__(self, predictor: Predictor, on_result: Callable | None = None) -> None:
        import ipywidgets as w

        self.predictor = predictor
        self.on_result = on_result
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="photo")
        self.opacity = w.FloatSlider(
            min=0.0, max=1.0, step=0.05, value=0.5, description="CAM opacity", continuous_update=False
        )
        self.output = w.Output()
        self.results: list = []
        self.upload.observe(lambda change: self.show(uploaded_files(change["new"])), names="value")
        self.opacity.observe(lambda _: self.show(None), names="value")
        self.widget = w.VBox([w.HBox([self.upload, self.opacity]), self.output])
        self._files: list[tuple[str, bytes]] = []

    def show(self, files: list[tuple[str, bytes]] | None) -> None:
        """Predict the uploaded files (or redraw the last ones when ``files`` is None)."""
        from fer_utils.core.errors import FERDataError
        from fer_utils.course.figures import face_prediction_figure, photo_prediction_figure

        if files is not None:
            self._files = files
        self.output.clear_output(wait=True)
        self.results = []
        with self.output:
            for name, content in self._files:
                try:
                    result = self.predictor.predict_image(content, keep_image=True)
                except FERDataError as err:
                    print(f"{name}: {err.reason}")
                    continue
                result.source = name
                self.results.append(result)
                _show(photo_prediction_figure(result))
                if result.faces:
                    cams = self.predictor.gradcam([f.face for f in result.faces])
                    for k, (face, cam) in enumerate(zip(result.faces, cams, strict=True)):
                        _show(
                            face_prediction_figure(
                                face.face, face.probabilities, cam, self.opacity.value, title=f"face {k}"
                            )
                        )
        if self.on_result is not None:
            self.on_result(self.results)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
