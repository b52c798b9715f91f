"""A training run's folder and its resumption: one run per folder (a lock while a process trains
into it, no resume from another folder's checkpoint), and a run continued exactly where it stopped,
with only the settings that do not change what was learned allowed to differ."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer_utils.core.config import (
    RESUMABLE_CHANGES,
    TrainConfig,
    unsafe_changes,
)
from fer_utils.core.errors import FERCheckpointError, FERConfigError
from fer_utils.model.checkpoints import Checkpoint, load_checkpoint, read_checkpoint_meta

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


def _no_training_state(path: str | os.PathLike) -> FERCheckpointError:
    return FERCheckpointError(
        f"{path}: holds no training state; resume from the last.safetensors that training writes, "
        "not from best.safetensors"
    )


def _refuse_unsafe_changes(path: str | os.PathLike, saved: TrainConfig, wanted: TrainConfig) -> None:
    """FERConfigError naming every setting a resumed run may not change (see ``RESUMABLE_CHANGES``)."""
    refused = unsafe_changes(saved, wanted)
    if refused:
        raise FERConfigError(
            f"{path}: a resumed run keeps its saved settings; cannot change "
            + ", ".join(f"{k} (saved {a!r}, asked {b!r})" for k, (a, b) in refused.items())
            + f". Only {', '.join(sorted(RESUMABLE_CHANGES))} may change "
            "(resume_config(checkpoint) gives the saved settings); start a new run for the rest"
        )


def resume_config(checkpoint: str | os.PathLike, **changes: Any) -> TrainConfig:
    """The configuration saved in a ``last.safetensors``, with ``changes`` applied.

    Only the fields in ``RESUMABLE_CHANGES`` may change; anything else raises FERConfigError.
    """
    meta = read_checkpoint_meta(checkpoint)
    if "config" not in meta or "training_state" not in meta:
        raise _no_training_state(checkpoint)
    saved = TrainConfig.from_dict(meta["config"])
    unknown = set(changes) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise FERConfigError(f"unknown TrainConfig field(s): {', '.join(sorted(unknown))}")
    wanted = dataclasses.replace(saved, **changes)
    _refuse_unsafe_changes(checkpoint, saved, wanted)
    return wanted


@dataclass
class RunState:
    """Where a run stands between epochs: what ``last.safetensors`` stores to resume exactly."""

    next_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0

    def to_meta(self) -> dict[str, Any]:
        return {
            "epoch": self.next_epoch - 1,
            "history": self.history,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
        }


def restore_run(
    resume: str | os.PathLike, config: TrainConfig, classes: tuple[str, ...]
) -> tuple[Checkpoint, RunState]:
    """Load ``last.safetensors`` and check it continues this very run (same classes, same settings
    apart from ``RESUMABLE_CHANGES``)."""
    checkpoint = load_checkpoint(resume)
    state = checkpoint.meta.get("training_state")
    if state is None or checkpoint.optimizer_state is None:
        raise _no_training_state(resume)
    if checkpoint.classes != classes or checkpoint.arch != config.arch:
        raise FERCheckpointError(
            f"{resume}: was trained as {checkpoint.arch} on {', '.join(checkpoint.classes)}; "
            f"this run is {config.arch} on {', '.join(classes)}"
        )
    _refuse_unsafe_changes(resume, TrainConfig.from_dict(checkpoint.meta.get("config", {})), config)
    run = RunState(state["epoch"] + 1, state["history"], state["best_value"], state["best_epoch"], state["bad_epochs"])
    return checkpoint, run
