"""The one output guard: before any work, refuse an output that would destroy something (an input
of the command, another output, an existing file unless asked to replace it) or that cannot be
written; and names for batch outputs that replace nothing."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from fer_utils.core.errors import FEROutputError


def _probe(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".fer-write-test.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise FEROutputError(
            f"{folder}: cannot write the {what} there ({err.strerror or err}); choose a writable location"
        ) from None


def ensure_writable_dir(path: str | os.PathLike, what: str = "output") -> Path:
    """Create ``path`` if needed and prove a file can be written in it, before any long work starts."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FEROutputError(f"{path}: is a file, not a folder; choose a folder for the {what}")
    _probe(path, what)
    return path


def ensure_writable_file(path: str | os.PathLike, what: str = "output") -> Path:
    """Check that ``path`` can be written as a file (its folder is writable; it is not a folder)."""
    path = Path(path)
    if path.is_dir():
        raise FEROutputError(f"{path}: is a folder; give a file name for the {what} (e.g. {path / 'out'})")
    _probe(path.parent, what)
    return path


def unused_path(folder: str | os.PathLike, stem: str, suffix: str, taken: set[Path]) -> Path:
    """``folder/stem suffix``, or ``stem_2``, ``stem_3``, ... : a path that neither exists yet nor
    is in ``taken`` (which it joins), so a batch of outputs never overwrites a file, an input or
    another output of the same run."""
    folder = Path(folder)
    candidate, n = folder / f"{stem}{suffix}", 1
    while candidate.exists() or candidate.is_symlink() or candidate in taken:
        n += 1
        candidate = folder / f"{stem}_{n}{suffix}"
    taken.add(candidate)
    return candidate


def _identity(path: Path) -> tuple[int, int] | None:
    """The file ``path`` names, through any links (device and inode; hard links share them)."""
    try:
        st = path.stat()
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


def check_outputs(
    files: dict[str, str | os.PathLike | None],
    *,
    inputs: Iterable[str | os.PathLike] = (),
    folders: dict[str, str | os.PathLike | None] | None = None,
    own_folders: dict[str, str | os.PathLike | None] | None = None,
    overwrite: bool = False,
) -> None:
    """The one output-path guard: refuse, before any work, an output that would destroy something.

    ``files`` and ``folders`` map what each output is ("JSON results") to its path (None: not
    asked for). A file output is refused when it is one of ``inputs`` (photos, the files inside
    input folders, checkpoints, members, data, teacher: whatever the command reads), through
    symbolic and hard links, with or without ``overwrite``; when two outputs are one file; when it
    already exists and ``overwrite`` is False; or when it cannot be written. ``inputs`` is read
    only when an output already exists (only an existing file can be destroyed), so it may be a
    generator over a large folder. A folder output is refused when it is also another output, or
    cannot be written; what goes inside ``folders`` is the caller's to keep apart from the inputs
    (``unused_path``). ``own_folders`` are read back whole (a ``--parquet`` run): one is also refused
    when it holds an input (an input folder itself, a photo, a checkpoint), which a reader of the
    folder would take for an output.
    """
    seen: dict[Path, str] = {}
    read: dict[tuple[int, int], Path] | None = None

    def inputs_read() -> dict[tuple[int, int], Path]:  # expanded once, and only when needed
        nonlocal read
        if read is None:
            read = {}
            for source in inputs:
                if source is not None and str(source) != "" and (i := _identity(Path(source))) is not None:
                    read.setdefault(i, Path(source))
        return read

    for what, path in files.items():
        if not path:
            continue
        path = Path(path)
        if (identity := _identity(path)) is not None:
            read = inputs_read()
            if identity in read:
                raise FEROutputError(
                    f"{path}: is an input of this command ({read[identity]}); writing the {what} there would "
                    "destroy it, and --overwrite never replaces inputs. Choose another output path"
                )
        key = path.resolve()
        if key in seen:
            raise FEROutputError(f"{path}: given for both the {seen[key]} and the {what}; give each its own path")
        seen[key] = what
        if path.exists() and not path.is_dir() and not path.is_file():  # a device, FIFO or socket
            raise FEROutputError(
                f"{path}: is not a regular file (a device, pipe or socket); give a file path for the {what}"
            )
        if (path.exists() or path.is_symlink()) and not path.is_dir() and not overwrite:
            raise FEROutputError(
                f"{path}: already exists; choose another path for the {what}, or replace it with "
                "overwrite=True (CLI: --overwrite)"
            )
        ensure_writable_file(path, what)
    own = own_folders or {}
    for what, path in [*(folders or {}).items(), *own.items()]:
        if not path:
            continue
        key = Path(path).resolve()
        if key in seen:
            raise FEROutputError(f"{path}: given for both the {seen[key]} and the {what}; give each its own folder")
        seen[key] = what
        if what in own and key.is_dir():
            inside = next((p for p in inputs_read().values() if p.resolve().is_relative_to(key)), None)
            if inside is not None:
                raise FEROutputError(
                    f"{path}: holds an input of this command ({inside}); the {what} need a folder of their own "
                    "(readers of the folder would take the inputs for outputs). Choose another folder"
                )
        ensure_writable_dir(path, what)
