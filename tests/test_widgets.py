"""Every course widget built and driven: values set, callbacks fired, what it shows changes.

These run under whatever ipywidgets is installed: JupyterLab's 8 in the suite, and Colab's 7.7.1
in the Colab check (``.ci/colab/check.py`` runs this file in a notebook's Colab runtime), so a
widget that works in one and breaks in the other fails here. Nothing here needs a browser.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import face_photo, write_face_video
from fer_utils.course.widgets import (
    WRONG,
    AugmentationSliders,
    PhotoUploader,
    PredictionExplorer,
    VideoFrameSlider,
    figure_pixels,
    uploaded_files,
)
from fer_utils.predict.predictor import Predictor

ipywidgets = pytest.importorskip("ipywidgets")


@pytest.fixture(scope="module")
def predictor(untrained_checkpoint) -> Predictor:
    return Predictor.from_checkpoint(untrained_checkpoint)


def changed(before: np.ndarray, after: np.ndarray) -> bool:
    return before.shape != after.shape or bool((before != after).any())


def test_widgets_report_the_ipywidgets_version_they_ran_under():
    major = int(ipywidgets.__version__.split(".")[0])
    assert major in (7, 8), (
        f"the course supports ipywidgets 7.7 (Colab) and 8 (JupyterLab), got {ipywidgets.__version__}"
    )


def test_augmentation_sliders_rebuild_the_pipeline_and_redraw(small_faces):
    sliders = AugmentationSliders(small_faces.images[0], image_size=48, n=4)
    first = figure_pixels(sliders.figure)
    assert "RandomRotation" in str(sliders.transform)
    sliders.strengths["rotation"].value = 0.0  # 0 turns rotation off: the pipeline loses that step
    assert "RandomRotation" not in str(sliders.transform)
    sliders.seed.value = 7
    assert changed(first, figure_pixels(sliders.figure)), "another seed drew the same faces"
    sliders.flip.value = False
    assert "RandomHorizontalFlip" not in str(sliders.transform)


def test_prediction_explorer_filters_and_redraws(predictor, small_faces):
    explorer = PredictionExplorer(predictor, small_faces)
    assert explorer.index.max == len(small_faces) - 1
    first = figure_pixels(explorer.figure)
    explorer.class_filter.value = "happy"
    assert explorer.index.max == 1 and all(small_faces.labels[explorer.selection()] == 3)
    assert "true: happy" in explorer.status.value
    assert changed(first, figure_pixels(explorer.figure))
    explorer.class_filter.value = WRONG
    assert len(explorer.selection()) == int((explorer.predicted != small_faces.labels).sum())
    explorer.class_filter.value = "neutral"
    explorer.index.value = 1
    assert explorer.status.value.startswith(str(small_faces.sources[explorer.selection()[1]]))
    shown = figure_pixels(explorer.figure)
    explorer.opacity.value = 1.0
    assert changed(shown, figure_pixels(explorer.figure)), "the CAM opacity slider did not change the figure"


def test_upload_values_of_ipywidgets_7_and_8():
    v7 = {"a.jpg": {"metadata": {"name": "a.jpg"}, "content": b"123"}}
    v8 = ({"name": "a.jpg", "type": "image/jpeg", "size": 3, "content": memoryview(b"123")},)
    assert uploaded_files(v7) == uploaded_files(v8) == [("a.jpg", b"123")]


def _upload_value(name: str, content: bytes):
    """What this ipywidgets version's FileUpload holds after a learner picks ``name``."""
    if int(ipywidgets.__version__.split(".")[0]) >= 8:
        from datetime import datetime, timezone

        item = {"name": name, "type": "image/jpeg", "size": len(content), "content": memoryview(content)}
        return ({**item, "last_modified": datetime.now(timezone.utc)},)
    return {name: {"metadata": {"name": name, "type": "image/jpeg", "size": len(content)}, "content": content}}


def test_uploader_predicts_a_photo_set_on_its_upload_widget(predictor):
    buffer = io.BytesIO()
    Image.fromarray(face_photo()).save(buffer, format="JPEG")
    seen = []
    uploader = PhotoUploader(predictor, on_result=seen.append)
    uploader.upload.set_trait("value", _upload_value("me.jpg", buffer.getvalue()))  # what the browser does
    assert len(seen) == 1 and len(uploader.results) == 1 and len(uploader.results[0].faces) == 1
    assert uploader.results[0].source == "me.jpg"
    uploader.opacity.value = 0.9  # redraws the same photo
    assert len(seen) == 2 and len(uploader.results) == 1
    uploader.show([("notes.txt", b"text")])  # not a photo: a line, no result
    assert uploader.results == []


def test_video_frame_slider_decodes_and_draws_the_chosen_frame(tmp_path, predictor):
    video = write_face_video(tmp_path / "v.mp4", lambda i: [(40 + i, 60)], n_frames=12, fps=10)
    result = predictor.predict_video(video)
    slider = VideoFrameSlider(video, result, predictor.classes)
    assert slider.position.max == len(result.frames) - 1
    first = figure_pixels(slider.figure)
    slider.position.value = 0
    assert f"frame {result.frames[0].frame}," in slider.figure.axes[0].get_title()
    assert changed(first, figure_pixels(slider.figure)), "another frame drew the same figure"
