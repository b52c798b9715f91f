"""Datasets: formats (FER2013 CSV, Kaggle folders, class folders, FER+), synthetic faces, caching, splits.

Names are imported on first use (PEP 562), so ``fer_utils.data.images`` (photos, used by the
torch-free inference path) does not pull in pandas and torch with the dataset classes.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "fer_utils.data.faceset": (
        "FaceSet",
        "LoadedDataset",
        "TorchFaceDataset",
        "class_turns",
        "class_weights",
        "stratified_sample",
        "stratified_split",
        "weighted_sampler",
    ),
    "fer_utils.data.fer2013_csv": ("load_fer2013_csv", "write_fer2013_csv"),
    "fer_utils.data.ferplus": ("load_ferplus",),
    "fer_utils.data.folders": ("load_image_folders",),
    "fer_utils.data.images": ("Skipped", "open_image", "read_face", "to_gray", "to_grayscale_array"),
    "fer_utils.data.loading": ("default_data_path", "load_dataset", "training_splits"),
    "fer_utils.data.synthetic": ("load_synthetic", "synthetic_faces"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME_OF)


def __getattr__(name: str) -> Any:
    if name in _HOME_OF:
        return getattr(importlib.import_module(_HOME_OF[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
