"""Where the course keeps files it makes for the user: caches (datasets, ONNX exports, the face
detector) under one folder the user can move with ``$FER_CACHE_DIR``, and the shipped models."""

from __future__ import annotations

import os
from pathlib import Path

REPO_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
"""The repository's models/ folder: the shipped checkpoints and their model cards."""


def default_cache_dir() -> Path:
    """``$FER_CACHE_DIR``, else ``~/.cache/fer_utils``."""
    return Path(os.environ.get("FER_CACHE_DIR") or Path.home() / ".cache" / "fer_utils")
