"""A training run's folder holds one run: a lock while a process trains into it, and no resume
from another folder's checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from fer_utils.core.errors import FERConfigError

LOCK_FILE = ".fer-train.lock"
"""Created (exclusively) in a run folder while a process trains into it; holds the owner's PID."""


def _owner_alive(lock: Path) -> tuple[bool, str]:
    """(whether the process that wrote ``lock`` still runs on this machine, a description of it)."""
    try:
        owner = json.loads(lock.read_text(encoding="utf-8"))
        pid, host = int(owner["pid"]), str(owner.get("host", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return False, "an unreadable lock"
    if host and host != socket.gethostname():
        return True, f"PID {pid} on {host}"  # cannot check another machine's processes: assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, f"PID {pid}"
    except PermissionError:
        return True, f"PID {pid}"
    return True, f"PID {pid}"


def check_resume_folder(out_dir: str | os.PathLike, resume: str | os.PathLike | None) -> None:
    """Refuse to resume another folder's run into ``out_dir``: that would overwrite this folder's
    best, last and history with a different run's."""
    if resume is None:
        return
    own = Path(out_dir).resolve()
    theirs = Path(resume).resolve().parent
    if own != theirs:
        raise FERConfigError(
            f"resume={resume!s} belongs to the run in {theirs}, but out_dir is {own}; a run folder holds one run: "
            f"resume into its own folder (out_dir={theirs!s}, CLI: --out {theirs})"
        )


@contextlib.contextmanager
def claim_run_folder(out_dir: str | os.PathLike, resume: str | os.PathLike | None = None) -> Iterator[Path]:
    """Hold ``out_dir`` for this process while it trains: a second live process is refused, a lock
    left by a dead process is taken over, and resuming from another folder's checkpoint is refused."""
    out_dir = Path(out_dir)
    check_resume_folder(out_dir, resume)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = out_dir / LOCK_FILE
    owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            alive, who = _owner_alive(lock)
            if alive:
                raise FERConfigError(
                    f"{out_dir}: another training ({who}) is writing this run folder; wait for it, stop it, "
                    "or choose another folder (out_dir, CLI: --out)"
                ) from None
            lock.unlink(missing_ok=True)  # its owner died: the folder is free again
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(owner)
        break
    else:
        raise FERConfigError(f"{out_dir}: could not take the run folder's lock {lock}; try again")
    try:
        yield out_dir
    finally:
        with contextlib.suppress(OSError):
            if lock.read_text(encoding="utf-8") == owner:
                lock.unlink()
