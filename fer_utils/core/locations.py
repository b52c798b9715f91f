"""Where the course keeps files it makes for the user: caches (datasets, ONNX exports, the face
detector) under one folder the user can move with ``$FER_CACHE_DIR``, and the shipped models."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
"""The installed ``fer_utils`` folder."""

ASSETS_DIR = PACKAGE_DIR / "assets"
"""Files the package ships: the face detector (YuNet, MIT) and the lessons' sample photo."""

REPO_DIR = PACKAGE_DIR.parent
"""The repository (when the package is used from a clone): notebooks, models, runs."""

REPO_MODELS_DIR = REPO_DIR / "models"
"""The repository's models/ folder: the shipped checkpoints and their model cards."""


def default_cache_dir() -> Path:
    """``$FER_CACHE_DIR``, else ``~/.cache/fer_utils``."""
    return Path(os.environ.get("FER_CACHE_DIR") or Path.home() / ".cache" / "fer_utils")
