"""Parquet outputs for collections (``--parquet DIR``): one file per input (a video, or a batch of
photos) with the CSV's columns plus ``input`` (the input's absolute path), each written whole
under a temporary name and moved into place, and a manifest of what is done. A rerun of the same
command skips every input whose file is there and verifies, and does the rest: a stopped or
crashed run resumes without doing anything twice. ``pandas.read_parquet(DIR)`` reads the whole
run (Parquet readers skip the manifest: its name starts with an underscore)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
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
MANIFEST_FORMAT = "fer_utils.parquet-run/1"


def input_key(source: str | os.PathLike) -> str:
    """How the manifest names an input: its absolute path, links resolved, so the same file given
    another way (a relative path, a link, inside a folder) is the same input."""
    return str(Path(source).resolve())


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise FERConfigError(f"--parquet needs pyarrow: {install_hint('scale')}") from None
    return pyarrow, pyarrow.parquet


class ParquetRun:
    """The Parquet folder of one command (``predict`` or ``video``): what is done, and each new
    input's file written whole and recorded."""

    def __init__(self, folder: str | os.PathLike, command: str, part_seconds: float | None = None) -> None:
        _pyarrow()  # says what to install before any work
        self.folder = ensure_writable_dir(folder, "Parquet outputs")
        self.command = command
        self.manifest = self.folder / MANIFEST
        self.part_seconds = part_seconds
        self.inputs = self._read_manifest()
        self._digests: dict[str, str | None] = {}
        self.written = 0  # files this run wrote

    def _read_manifest(self) -> dict[str, dict[str, Any]]:
        if not self.manifest.exists():
            return {}
        try:
            data = json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise FEROutputError(
                f"{self.manifest}: not a manifest of fer's Parquet outputs ({err}); choose another --parquet folder"
            ) from None
        if not (
            isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT and isinstance(data.get("inputs"), dict)
        ):
            raise FEROutputError(
                f"{self.manifest}: not a manifest of fer's Parquet outputs; choose another --parquet folder"
            )
        if data.get("command") != self.command:
            raise FEROutputError(
                f"{self.folder}: holds the outputs of `fer {data.get('command')}`; give `fer {self.command}` its own "
                "--parquet folder"
            )
        parted = data.get("part_seconds")
        if parted != self.part_seconds and any("parts" in e for e in data["inputs"].values() if isinstance(e, dict)):
            same = (
                f"--chunk-minutes {parted / 60:g}" if isinstance(parted, (int, float)) else "the same --chunk-minutes"
            )
            raise FEROutputError(
                f"{self.folder}: its long videos were analysed in parts of {parted} s; rerun with --engine ray "
                f"{same}, or give another --parquet folder"
            )
        return data["inputs"]

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
            ok = Path(name).name == name and path.is_file()
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
        for key in map(input_key, sources):
            entry = self.inputs.get(key)
            if part is not None and isinstance(entry, dict) and entry.get("of") == part[1]:
                entry["parts"][str(part[0])] = {"file": name, "sha256": sha}
                continue
            self._remove_files(entry, keep=name)  # the input's rows laid out otherwise before: never twice
            self.inputs[key] = (
                {"file": name, "sha256": sha}
                if part is None
                else {"parts": {str(part[0]): {"file": name, "sha256": sha}}, "of": part[1]}
            )
        manifest = {"format": MANIFEST_FORMAT, "command": self.command, "inputs": self.inputs}
        if self.part_seconds is not None:
            manifest["part_seconds"] = self.part_seconds
        write_text_atomic(self.manifest, json.dumps(manifest, indent=1) + "\n")

    def _remove_files(self, entry: Any, keep: str) -> None:
        """Delete the files an input's earlier entry recorded (a whole file, or parts of another
        layout), so a reader never sees its rows twice."""
        if not isinstance(entry, dict):
            return
        parts = entry.get("parts")
        for item in [entry, *parts.values()] if isinstance(parts, dict) else [entry]:
            name = item.get("file") if isinstance(item, dict) else None
            if isinstance(name, str) and Path(name).name == name and name != keep:
                (self.folder / name).unlink(missing_ok=True)


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
