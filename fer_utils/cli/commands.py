"""The ``fer`` command: its parser (one sub-command per job, each built next to its handler in
the modules of this package) and ``main``, the one place user errors and stop signals end.

User errors (bad paths, files, values) print one line ``fer: error: ...`` and exit 1;
Ctrl-C, SIGTERM and SIGHUP exit 128 + the signal, after saying what was kept and how to continue.
"""

from __future__ import annotations

import argparse
import signal
import sys

from fer_utils.cli.media import add_predict_parser, add_serve_parser, add_video_parser, add_webcam_parser
from fer_utils.cli.models import add_data_parser, add_ensemble_parser, add_export_parser
from fer_utils.cli.shared import EXIT_INTERRUPTED, EXIT_USER_ERROR
from fer_utils.cli.training import add_calibrate_parser, add_evaluate_parser, add_teacher_parser, add_train_parser
from fer_utils.core.errors import FERError, TerminalSafeStream
from fer_utils.core.interrupts import exit_status, stop_signals_as_interrupt


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the bad value and where to look (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"fer: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fer`` (exposed for docs and tests): one sub-parser per command,
    each built next to its handler."""
    parser = OneLineParser(prog="fer", description="Facial expression recognition: train, evaluate, predict.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        add_train_parser,
        add_teacher_parser,
        add_evaluate_parser,
        add_calibrate_parser,
        add_predict_parser,
        add_export_parser,
        add_ensemble_parser,
        add_serve_parser,
        add_webcam_parser,
        add_video_parser,
        add_data_parser,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fer`` console script."""
    args = build_parser().parse_args(argv)
    # one sink for the terminal: names from files (classes, photos, videos) print as text
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = TerminalSafeStream(sys.stdout), TerminalSafeStream(sys.stderr, progress_bars=True)
    # one handler for stop requests: SIGTERM and SIGHUP stop every command as Ctrl-C does
    with stop_signals_as_interrupt() as received:
        try:
            status = args.func(args)
        except FERError as err:
            print(f"fer: error: {err}", file=sys.stderr)
            status = EXIT_USER_ERROR
        except KeyboardInterrupt:
            print(f"fer: interrupted{_stopped_by(received)}; no output was left half-written", file=sys.stderr)
            status = EXIT_INTERRUPTED
        except OSError as err:  # the system's reason (a full disk, a folder gone): one line, as a user error
            where = f"{err.filename}: " if err.filename else ""
            print(
                f"fer: error: {where}{err.strerror or err}; no output was left half-written at its name",
                file=sys.stderr,
            )
            status = EXIT_USER_ERROR
        finally:
            sys.stdout, sys.stderr = streams
    if received and status in (0, EXIT_INTERRUPTED):  # stopped (a server ends only so): say by which signal
        return exit_status(received[0])
    return status


def _stopped_by(received: list[int]) -> str:
    return f" (by {signal.Signals(received[0]).name})" if received else ""
