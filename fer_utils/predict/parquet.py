"""Parquet outputs for collections (``--parquet DIR``): one file per input (a video, or a batch of
photos) with the CSV's columns plus ``input`` (the input's absolute path), each written whole
under a temporary name and moved into place, and a manifest of what is done.

The manifest records what produced the rows: the model (its files' SHA-256), every option that
changes rows, and each input's identity (size, modification time and a fingerprint of its
bytes). A rerun skips only the inputs whose file is there, verifies, and comes from this very
input, model and options; an input changed since is done again (and said so); other options or
another model are refused in one line unless ``redo`` starts the folder over. One run at a time
holds a folder (a lock released when the process ends, however it ends). The run only ever
removes files it wrote and recorded: a name of its own pattern whose bytes match the recorded
SHA-256. ``pandas.read_parquet(DIR)`` reads the whole run (Parquet readers skip the manifest and
the lock: their names start with an underscore)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fer_utils.core.atomic import atomic_path, write_text_atomic
from fer_utils.core.errors import FERConfigError, FEROutputError, install_hint
from fer_utils.core.outputs import ensure_writable_dir
from fer_utils.core.schema import INTEGER_COLUMNS, TEXT_COLUMNS
from fer_utils.runtime.onnx import file_digest

PHOTOS_PER_FILE = 256
"""Photos are written in files of this many (one file per photo would be millions of tiny files)."""

MANIFEST = "_manifest.json"
MANIFEST_FORMAT = "fer_utils.parquet-run/2"
OLD_FORMATS = ("fer_utils.parquet-run/1",)
LOCK = "_run.lock"
HOLDER = "_run.json"
OWN_FILE = re.compile(r"[A-Za-z0-9._-]{0,60}-[0-9a-f]{16}\.parquet")
"""The names this module gives its files (``parquet_name``): only such a file is ever removed."""

WHOLE_HASH_BYTES = 4 << 20
"""Inputs up to this size are fingerprinted by the SHA-256 of all their bytes; larger ones (videos)
by the SHA-256 of their size and three 1 MiB samples (start, middle, end): a replaced or re-encoded
video changes them, and a collection of terabytes is not read twice to vouch for it."""


def input_key(source: str | os.PathLike) -> str:
    """How the manifest names an input: its absolute path, links resolved, so the same file given
    another way (a relative path, a link, inside a folder) is the same input."""
    return str(Path(source).resolve())


def input_identity(source: str | os.PathLike) -> dict[str, Any]:
    """What the manifest keeps of an input to know it again: size, modification time (ns) and a
    fingerprint (``WHOLE_HASH_BYTES`` says which bytes it covers)."""
    path = Path(source)
    st = path.stat()
    digest = hashlib.sha256(str(st.st_size).encode())
    with open(path, "rb") as f:
        if st.st_size <= WHOLE_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        else:
            for offset in (0, st.st_size // 2 - (1 << 19), st.st_size - (1 << 20)):
                f.seek(offset)
                digest.update(f.read(1 << 20))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "fingerprint": digest.hexdigest()}


def _same_input(source: str | os.PathLike, recorded: Any) -> bool:
    """True when ``source`` is the input ``recorded`` describes: same size, and the same
    modification time (trusted, as make and rsync do) or else the same fingerprint."""
    if not isinstance(recorded, dict):
        return False
    try:
        st = Path(source).stat()
        if st.st_size != recorded.get("size"):
            return False
        return st.st_mtime_ns == recorded.get("mtime_ns") or input_identity(source)["fingerprint"] == recorded.get(
            "fingerprint"
        )
    except OSError:
        return False


def model_identity(files: Sequence[str | os.PathLike]) -> str:
    """How a run's settings name its model: the checkpoint files' names and the SHA-256 of their
    bytes (the same weights under another name are the same model)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(file_digest(path).encode())
    return f"{'+'.join(Path(f).name for f in files)} (sha256 {digest.hexdigest()[:12]})"


def _differences(there: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """``--every 1 there, 3 here`` for each setting that differs."""

    def shown(value: Any) -> str:
        return "none" if value is None else "yes" if value is True else "no" if value is False else str(value)

    keys = list(dict.fromkeys([*here, *there]))
    return [f"{k} {shown(there.get(k))} there, {shown(here.get(k))} here" for k in keys if there.get(k) != here.get(k)]


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise FERConfigError(f"--parquet needs pyarrow: {install_hint('scale')}") from None
    return pyarrow, pyarrow.parquet


class ParquetRun:
    """The Parquet folder of one command (``predict`` or ``video``): what is done, by which model
    and options, and each new input's file written whole and recorded.

    ``settings``: the model and every option that changes rows, flag -> value (``--every``: 3);
    a folder whose rows came from other settings is refused unless ``redo``, which removes the
    folder's recorded files first. ``part_seconds``: the Ray engine's parts of long videos (a
    setting too). ``on_plan(done, changed)`` hears each :meth:`plan` as it is made, before any
    work (the CLI says it). Holds the folder's lock until :meth:`close` (or the ``with`` block's end)."""

    def __init__(
        self,
        folder: str | os.PathLike,
        command: str,
        settings: dict[str, Any] | None = None,
        part_seconds: float | None = None,
        redo: bool = False,
        on_plan: Callable[[list[str], list[str]], None] | None = None,
    ) -> None:
        _pyarrow()  # says what to install before any work
        self.folder = ensure_writable_dir(folder, "Parquet outputs")
        self.command = command
        self.manifest = self.folder / MANIFEST
        self.part_seconds, self.on_plan = part_seconds, on_plan
        self.settings = dict(settings or {})
        if command == "video":  # parts restart track ids: they change rows
            self.settings.setdefault("--chunk-minutes", round(part_seconds / 60, 9) if part_seconds else None)
        self._digests: dict[str, str | None] = {}
        self._identities: dict[str, dict[str, Any]] = {}
        self.written = 0  # files this run wrote
        self._lock = _lock_folder(self.folder, command)
        try:
            self.inputs = self._read_manifest(redo)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the folder for the next run."""
        if self._lock is not None:
            (self.folder / HOLDER).unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def __enter__(self) -> ParquetRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_manifest(self, redo: bool) -> dict[str, dict[str, Any]]:
        if not self.manifest.exists():
            return {}
        try:
            data = json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise FEROutputError(
                f"{self.manifest}: not a manifest of fer's Parquet outputs ({err}); choose another --parquet folder"
            ) from None
        if not (
            isinstance(data, dict)
            and data.get("format") in (MANIFEST_FORMAT, *OLD_FORMATS)
            and isinstance(data.get("inputs"), dict)
        ):
            raise FEROutputError(
                f"{self.manifest}: not a manifest of fer's Parquet outputs; choose another --parquet folder"
            )
        if data.get("command") != self.command:
            raise FEROutputError(
                f"{self.folder}: holds the outputs of `fer {data.get('command')}`; give `fer {self.command}` its own "
                "--parquet folder"
            )
        if data["format"] in OLD_FORMATS:
            problem = "was written by an older fer that did not record the model and options behind its rows"
        else:
            differ = _differences(data.get("settings") if isinstance(data.get("settings"), dict) else {}, self.settings)
            problem = f"its rows came from other settings ({'; '.join(differ)})" if differ else ""
        if problem and not redo:
            raise FEROutputError(
                f"{self.folder}: {problem}; rerun with the same ones, add --redo to analyse every input again with "
                "these (the folder's own files are replaced), or give another --parquet folder"
            )
        if problem:  # --redo: the earlier run's files go (only those it wrote and recorded), then a fresh record
            for entry in data["inputs"].values():
                self._remove_files(entry)
            self.inputs = {}
            self._write_manifest()
            return self.inputs
        return data["inputs"]

    def plan(self, sources: Sequence[str | os.PathLike]) -> tuple[list[str | os.PathLike], list[str], list[str]]:
        """``(todo, done, changed)`` for ``sources``: done are those whose rows are here, verify and
        come from the same input; changed are inputs replaced or edited since (their old rows, and
        those of inputs written in the same file, are removed now: they are all in ``todo``)."""
        changed = []
        for source in sources:
            entry = self.inputs.get(input_key(source))
            if isinstance(entry, dict) and not _same_input(source, entry.get("input")):
                changed.append(str(source))
                self._forget(entry)
        if changed:
            self._write_manifest()
        todo, done = [], []
        for source in sources:
            (done if self.is_done(source) else todo).append(source)
        for source in todo:
            key = input_key(source)
            try:
                self._identities[key] = input_identity(source)  # before the work: an edit during it is seen later
            except OSError:
                self._identities.pop(key, None)
        if self.on_plan is not None:
            self.on_plan([str(s) for s in done], changed)
        return todo, [str(s) for s in done], changed

    def _forget(self, entry: dict[str, Any]) -> None:
        """Remove an input's recorded rows, and the record of every input that shares its files."""
        names = {name for name, _ in _recorded_files(entry)}
        for key, other in list(self.inputs.items()):
            if names & {name for name, _ in _recorded_files(other)}:
                del self.inputs[key]
        self._remove_files(entry)

    def is_done(self, source: str | os.PathLike, part: tuple[int, int] | None = None) -> bool:
        """True when ``source``'s rows (or those of its part ``(k, n)``: part k of n) are in files
        of this folder that are the ones recorded for them (SHA-256 matches): a deleted, truncated
        or replaced file is done again. A video analysed in parts is done when every part is."""
        entry = self.inputs.get(input_key(source))
        if not isinstance(entry, dict):
            return False
        if isinstance(entry.get("parts"), dict):
            parts, of = entry["parts"], entry.get("of")
            if part is not None:
                return of == part[1] and self._verified(parts.get(str(part[0])))
            return isinstance(of, int) and of > 0 and all(self._verified(parts.get(str(k))) for k in range(of))
        return part is None and self._verified(entry)

    def _verified(self, entry: Any) -> bool:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            return False
        name = entry["file"]
        if name not in self._digests:
            path = self.folder / name
            ok = OWN_FILE.fullmatch(name) is not None and path.is_file() and not path.is_symlink()
            self._digests[name] = file_digest(path) if ok else None
        return self._digests[name] is not None and self._digests[name] == entry.get("sha256")

    def write(
        self,
        sources: Sequence[str | os.PathLike],
        rows: list[dict[str, Any]],
        name_hint: str,
        columns: Sequence[str] = (),
    ) -> Path:
        """One file holding ``rows`` for ``sources`` (a video, or a batch of photos), written under
        a temporary name and moved into place; then the manifest records each source as done."""
        name, sha = write_parquet_file(self.folder, sources, rows, name_hint, columns)
        self.record(sources, name, sha)
        return self.folder / name

    def record(
        self, sources: Sequence[str | os.PathLike], name: str, sha: str, part: tuple[int, int] | None = None
    ) -> None:
        """Record ``sources`` as done in file ``name`` (of SHA-256 ``sha``); ``part`` (k, n): the
        file holds part k of n of one video. Only the process that owns the run records, so
        workers that write files side by side never race on the manifest."""
        self._digests[name] = sha
        self.written += 1
        for source in sources:
            key = input_key(source)
            entry = self.inputs.get(key)
            if part is not None and isinstance(entry, dict) and entry.get("of") == part[1]:
                entry["parts"][str(part[0])] = {"file": name, "sha256": sha}
                continue
            self._remove_files(entry, keep=name)  # the input's rows laid out otherwise before: never twice
            if key not in self._identities:
                try:
                    self._identities[key] = input_identity(source)
                except OSError:
                    self._identities[key] = {}
            self.inputs[key] = (
                {"file": name, "sha256": sha}
                if part is None
                else {"parts": {str(part[0]): {"file": name, "sha256": sha}}, "of": part[1]}
            )
            self.inputs[key]["input"] = self._identities[key]
        self._write_manifest()

    def _write_manifest(self) -> None:
        manifest = {
            "format": MANIFEST_FORMAT,
            "command": self.command,
            "settings": self.settings,
            "inputs": self.inputs,
        }  # standard JSON only (no Infinity or NaN): every reader takes it
        write_text_atomic(self.manifest, json.dumps(manifest, indent=1, allow_nan=False) + "\n")

    def _remove_files(self, entry: Any, keep: str | None = None) -> None:
        """Delete the files an input's earlier entry recorded (a whole file, or parts of another
        layout), so a reader never sees its rows twice: only a file of this module's naming whose
        bytes are the ones recorded, never one a manifest merely names."""
        for name, sha in _recorded_files(entry):
            path = self.folder / name
            if name == keep or OWN_FILE.fullmatch(name) is None or path.is_symlink() or not path.is_file():
                continue
            if file_digest(path) == sha:
                path.unlink()
                self._digests.pop(name, None)


def _recorded_files(entry: Any) -> list[tuple[str, str]]:
    """The (file name, SHA-256) pairs an input's entry records."""
    if not isinstance(entry, dict):
        return []
    parts = entry.get("parts")
    items = [entry, *parts.values()] if isinstance(parts, dict) else [entry]
    return [
        (item["file"], item.get("sha256"))
        for item in items
        if isinstance(item, dict) and isinstance(item.get("file"), str)
    ]


def _lock_folder(folder: Path, command: str) -> Any:
    """Take ``folder``'s lock (an OS file lock, released when the process ends however it ends, so a
    dead run's lock is never in the way), or say which run holds it."""
    try:
        from filelock import FileLock, Timeout
    except ImportError:
        raise FERConfigError(f"--parquet needs filelock: {install_hint('scale')}") from None
    lock = FileLock(str(folder / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = json.loads((folder / HOLDER).read_text(encoding="utf-8"))
            who = f"`fer {holder['command']}`, process {holder['pid']} on {holder['host']}, since {holder['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            who = "another fer run"
        raise FEROutputError(
            f"{folder}: in use by {who}; wait for it to end (or stop it), or give another --parquet folder"
        ) from None
    holder = {
        "command": command,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_text_atomic(folder / HOLDER, json.dumps(holder) + "\n")
    return lock


def parquet_name(sources: Sequence[str | os.PathLike], name_hint: str) -> str:
    """The file name of these inputs' rows: the same inputs always get the same name, so a task
    that runs again (a retried worker, a resumed run) replaces its own file, never adds a second."""
    digest = hashlib.sha256("\n".join(map(input_key, sources)).encode()).hexdigest()[:16]
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', name_hint)[:60]}-{digest}.parquet"


def write_parquet_file(
    folder: str | os.PathLike,
    sources: Sequence[str | os.PathLike],
    rows: list[dict[str, Any]],
    name_hint: str,
    columns: Sequence[str] = (),
) -> tuple[str, str]:
    """Write ``rows`` (plus each row's ``input``) as one Parquet file in ``folder``, whole (a
    temporary name, then a rename); returns its name and SHA-256. Safe in any process."""
    pa, pq = _pyarrow()
    for row in rows:
        row.setdefault("input", input_key(row.get("file", sources[0])))
    wanted = list(dict.fromkeys([*columns, *(k for row in rows for k in row), "input"]))
    schema = pa.schema([(c, _column_type(pa, c)) for c in wanted])
    name = parquet_name(sources, name_hint)
    with atomic_path(Path(folder) / name) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    return name, file_digest(Path(folder) / name)


def _column_type(pa: Any, column: str) -> Any:
    if column in TEXT_COLUMNS:
        return pa.string()
    return pa.int64() if column in INTEGER_COLUMNS else pa.float64()
