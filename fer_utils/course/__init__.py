"""The course's side of the library: what a notebook's setup cell calls (``lessons``), the
lessons' figures and widgets, and the report of a training run. ``from fer_utils.course import
setup, param, FAST`` reads the lessons module's names; ``python -m fer_utils.course
--repository URL`` points a fork's notebooks at the fork."""

from typing import Any

from fer_utils.course import lessons as _lessons
from fer_utils.course.lessons import (
    LESSONS_FILE,
    REPOSITORY,
    checkpoint_for,
    dataset_path,
    fast_mode,
    in_colab,
    main,
    param,
    repo_root,
    run_time_text,
    runs_dir,
    sample_face,
    sample_photo,
    set_repository,
    setup,
)

__all__ = [
    "LESSONS_FILE",
    "REPOSITORY",
    "checkpoint_for",
    "dataset_path",
    "fast_mode",
    "in_colab",
    "main",
    "param",
    "repo_root",
    "run_time_text",
    "runs_dir",
    "sample_face",
    "sample_photo",
    "set_repository",
    "setup",
]


def __getattr__(name: str) -> Any:
    """``course.FAST``: the value of :func:`fast_mode` when it is read (not at import time)."""
    if name == "FAST":
        return _lessons.fast_mode()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
