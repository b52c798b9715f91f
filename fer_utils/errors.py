"""Exceptions a user can cause. The CLI turns any of them into one line and exit code 1."""

from __future__ import annotations


class FERError(Exception):
    """Base class: a problem with the user's input, with a message that says what to do."""


class FERDataError(FERError):
    """A dataset, image or CSV cannot be used as given. ``source`` names the file (or row) and
    ``reason`` says what is wrong with it, so callers that list skipped files need not parse the
    message; ``FERDataError(source=..., reason=...)`` reads ``source: reason``."""

    def __init__(self, message: str = "", *, source: str | None = None, reason: str | None = None) -> None:
        super().__init__(message or f"{source}: {reason}")
        self.source = source
        self.reason = reason if reason is not None else message


class FERCheckpointError(FERError):
    """A checkpoint is missing, truncated, of another format, or does not match the model."""


class FERConfigError(FERError):
    """A hyperparameter or option has a value we cannot use."""


class FERTrainingError(FERError):
    """Training cannot continue (e.g. the loss became NaN)."""


class FEROutputError(FERError):
    """An output file or folder cannot be written (read-only, a folder where a file is wanted, ...)."""
