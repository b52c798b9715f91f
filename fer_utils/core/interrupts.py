"""Stop requests, one way for every command: Ctrl-C (SIGINT), SIGTERM (what ``timeout``, ``kill``,
``docker stop``, systemd and Slurm send) and SIGHUP (a closed terminal or SSH session) all raise
:class:`Stopped`, a ``KeyboardInterrupt``, in the main thread. So whatever already handles Ctrl-C
(training saves and says how to resume, ``fer video`` keeps its rows, atomic writes remove their
temporary files, the app's upload folder goes at exit) handles the other two the same way."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class Stopped(KeyboardInterrupt):
    """A stop request: ``signum`` says which signal, so the exit status can say it too."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def exit_status(signum: int = signal.SIGINT) -> int:
    """The shell's convention for a process stopped by a signal: 128 + its number (130 for Ctrl-C,
    143 for SIGTERM, 129 for SIGHUP)."""
    return 128 + int(signum)


_received: list[int] | None = None  # the signals of the outermost active block, shared by nested ones
_installed: dict[int, object] = {}  # the handlers that block installed, by signal


def restore_stop_handlers() -> None:
    """Install the active block's handlers again after a library replaced them (``ray.init`` sets
    its own SIGTERM handler, which exits 15 without the interrupted line): a stop keeps raising
    :class:`Stopped`. Outside a block, or outside the main thread, it does nothing."""
    if _received is None or threading.current_thread() is not threading.main_thread():
        return
    for s, handler in _installed.items():
        signal.signal(s, handler)


@contextlib.contextmanager
def stop_signals_as_interrupt() -> Iterator[list[int]]:
    """While the block runs, a stop signal raises :class:`Stopped`; after the first, SIGTERM and
    SIGHUP are ignored, so the cleanup it started (moving partial outputs to their names, removing
    temporary files) is not cut short by a second ``kill`` (a second Ctrl-C still forces). Yields
    the signals received; a nested block shares its outer block's. Outside the main thread (where
    Python cannot take signals) it does nothing."""
    global _received
    if _received is not None or threading.current_thread() is not threading.main_thread():
        yield _received if _received is not None else []
        return
    received: list[int] = []

    def _stop(signum: int, frame: object) -> None:
        received.append(signum)
        if len(received) == 1 or signum == signal.SIGINT:
            raise Stopped(signum)

    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        if s == signal.SIGINT and previous[s] == signal.SIG_IGN:
            continue  # started with Ctrl-C ignored (a background job of a non-interactive shell): keep it so
        signal.signal(s, _stop)
        _installed[s] = _stop
    _received = received
    try:
        yield received
    finally:
        _received = None
        _installed.clear()
        for s, handler in previous.items():
            signal.signal(s, handler)
