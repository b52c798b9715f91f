"""Exceptions a user can cause. The CLI turns any of them into one line and exit code 1."""

from __future__ import annotations

import re


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


def install_hint(extras: str) -> str:
    """How to add one of the package's extras, as the docs write it (the course installs from its
    folder): every "needs X" message names the install this one way."""
    return f"pip install -e '.[{extras}]' in the course's folder"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\r``): a class name or a
    file name from someone else cannot clear the screen, move the cursor or overwrite a line.
    Newlines and tabs stay."""
    return _CONTROL.sub(lambda m: repr(m[0])[1:-1], text)


class TerminalSafeStream:
    """A text stream that passes what is written through :func:`terminal_safe`: the ``fer``
    command's one sink for stdout and stderr. With ``progress_bars`` it lets through the two
    things tqdm writes to redraw a bar, a return that starts a write and a write made only of
    cursor-ups and newlines; a return or escape inside a printed name is still escaped."""

    def __init__(self, stream, progress_bars: bool = False) -> None:
        self._stream = stream
        self._progress_bars = progress_bars

    def write(self, text: str) -> int:
        if self._progress_bars and text.startswith("\r"):
            return self._stream.write("\r" + terminal_safe(text[1:]))
        if self._progress_bars and not text.replace("\x1b[A", "").strip("\n"):
            return self._stream.write(text)
        return self._stream.write(terminal_safe(text))

    def __getattr__(self, name: str):
        return getattr(self._stream, name)
