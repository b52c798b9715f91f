"""Facial expression recognition, as a course and as a library.

The layers are the sub-packages, lower first: ``core`` (errors, labels, metadata, safe writes),
``runtime`` (what a model sees; ONNX Runtime), ``data``, ``faces`` (detect, track, draw),
``model`` (build, checkpoints, export, Grad-CAM), ``train``, ``predict`` (photos and videos,
torch-free), ``deploy`` (app, webcam), ``course`` (the notebooks' helpers) and ``cli``.
The names a user imports are here, each loaded on first use (so ``import fer_utils`` stays
light and a prediction never imports torch)::

    from fer_utils import Predictor
    Predictor.from_checkpoint().predict_image("photo.jpg")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "Predictor": "fer_utils.predict.predictor",
    "PredictorOptions": "fer_utils.predict.predictor",
    "predict_photos": "fer_utils.predict.batch",
    "PhotoReport": "fer_utils.predict.batch",
    "ImageResult": "fer_utils.faces.results",
    "FaceResult": "fer_utils.faces.results",
    "VideoResult": "fer_utils.predict.video",
    "results_dataframe": "fer_utils.faces.results",
    "load_dataset": "fer_utils.data.loading",
    "training_splits": "fer_utils.data.loading",
    "TrainConfig": "fer_utils.core.config",
    "train": "fer_utils",  # the sub-package fer_utils.train, which calls train() when called
    "build_model": "fer_utils.model.factory",
    "register_architecture": "fer_utils.core.architectures",
    "load_model": "fer_utils.model.assembly",
    "evaluate_checkpoint": "fer_utils.train.evaluation",
    "evaluate_model": "fer_utils.train.evaluation",
    "ModelDescription": "fer_utils.runtime.description",
    "export_onnx": "fer_utils.model.export",
    "EMOTIONS": "fer_utils.core.labels",
    "EvaluationReport": "fer_utils.train.evaluation",
    "FERError": "fer_utils.core.errors",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name == "train":  # Python records the sub-package under this name once it is imported: it is callable
        return importlib.import_module("fer_utils.train")
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'fer_utils' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names too (they load on first use), so tab completion finds ``Predictor``."""
    return sorted({*globals(), *__all__})
