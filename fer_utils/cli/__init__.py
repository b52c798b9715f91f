"""The ``fer`` command (``fer = fer_utils.cli:main``; also ``python -m fer_utils.cli``): one
sub-command per job, each built next to its handler; user errors are one line."""

from fer_utils.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
