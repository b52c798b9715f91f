"""Interactive notebook tools (ipywidgets core widgets; works with ipywidgets 7.7+ and 8, so Colab too).

- :class:`PredictionExplorer`: a slider over dataset faces showing the image, true and predicted
  label, every class's probability and the Grad-CAM overlay, with a class filter and an opacity
  slider.
- :class:`PhotoUploader`: upload your own photo and see every face's prediction and Grad-CAM.
- :class:`AugmentationSliders`: one slider per training augmentation over one face (notebook 02).
- :class:`VideoFrameSlider`: step through an analysed video's frames with every face's
  probabilities (notebook 10).

Every widget keeps the figure it drew last in ``figure`` (tests compare it after moving a slider).

Figures are drawn into an ``Output`` widget so they update in place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from fer_utils.core.errors import FERDataError
from fer_utils.data.faceset import FaceSet
from fer_utils.predict.predictor import Predictor

ALL = "all classes"
WRONG = "misclassified only"


def _show(fig) -> None:
    """Display a figure in the current output (widget or cell) and free it."""
    from IPython.display import display

    display(fig)
    plt.close(fig)


def figure_pixels(fig) -> np.ndarray:
    """A drawn figure's RGBA pixels: what the learner sees, to tell two renderings apart."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # a closed figure keeps no drawing canvas of its own
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


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
            probabilities = evaluate_model(predictor.model, faces, predictor.checkpoint.description).probabilities
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
        self.figure = None
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
            self.figure = face_prediction_figure(
                face, probs, cam, self.opacity.value, title=f"true: {classes[self.faces.labels[i]]}"
            )
            _show(self.figure)

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


class AugmentationSliders:
    """One slider per augmentation's strength (0 turns it off), a flip switch and a seed over one
    face: the original and ``n`` augmented copies redraw when you let go of a slider, with the
    torchvision pipeline those strengths build printed below."""

    NAMES = ("crop", "rotation", "brightness", "contrast", "erasing")

    def __init__(self, face: np.ndarray, image_size: int, n: int = 8) -> None:
        import ipywidgets as w

        self.face, self.image_size, self.n = face, image_size, n
        strength = dict(min=0.0, max=1.0, step=0.1, value=0.5, continuous_update=False)
        self.strengths = {name: w.FloatSlider(description=name, **strength) for name in self.NAMES}
        self.flip = w.Checkbox(value=True, description="flip")
        self.seed = w.IntSlider(min=0, max=20, value=0, description="seed", continuous_update=False)
        self.output = w.Output()
        self.figure = None
        self.transform = None
        for control in (*self.strengths.values(), self.flip, self.seed):
            control.observe(lambda _: self.render(), names="value")
        rows = [w.HBox(list(self.strengths.values())[k : k + 3]) for k in (0, 3)]
        self.widget = w.VBox([*rows, w.HBox([self.flip, self.seed]), self.output])
        self.render()

    def render(self) -> None:
        """Build the pipeline the sliders set and redraw the augmented copies."""
        from fer_utils.course.figures import augmentation_grid_figure
        from fer_utils.train.transforms import Augmentation, augmentation_transform

        chosen = Augmentation(**{name: s.value for name, s in self.strengths.items()}, flip=self.flip.value)
        self.transform = augmentation_transform(self.image_size, chosen)
        self.output.clear_output(wait=True)
        with self.output:
            self.figure = augmentation_grid_figure(self.face, self.transform, n=self.n, seed=self.seed.value)
            _show(self.figure)
            print(self.transform)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


class VideoFrameSlider:
    """A slider over the analysed frames of a video: the frame with each tracked face's box and
    label, beside each face's raw (pale) and smoothed (solid) probabilities. Redraws when you let
    go of the slider (each redraw decodes one frame)."""

    def __init__(self, video: str | Path, result, classes: Sequence[str]) -> None:
        import ipywidgets as w

        self.video, self.classes = str(video), list(classes)
        self.frames = list(result.frames) or list(result)  # a result not yet iterated is analysed now
        if not self.frames:
            raise FERDataError(source=self.video, reason="no analysed frames to show")
        self.position = w.IntSlider(
            min=0, max=len(self.frames) - 1, value=len(self.frames) // 2, description="frame",
            continuous_update=False,
        )  # fmt: skip
        self.output = w.Output()
        self.figure = None
        self.position.observe(lambda _: self.render(), names="value")
        self.widget = w.VBox([self.position, self.output])
        self.render()

    def frame_image(self, frame: int) -> np.ndarray:
        """Frame ``frame`` of the video, decoded (BGR)."""
        import cv2

        capture = cv2.VideoCapture(self.video)
        try:
            capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
            ok, image = capture.read()
        finally:
            capture.release()
        if not ok:
            raise FERDataError(source=self.video, reason=f"frame {frame} cannot be decoded")
        return image

    def render(self) -> None:
        """Redraw the frame under the slider."""
        from fer_utils.course.figures import video_frame_figure

        analysed = self.frames[self.position.value]
        self.output.clear_output(wait=True)
        with self.output:
            self.figure = video_frame_figure(self.frame_image(analysed.frame), analysed, self.classes)
            _show(self.figure)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
