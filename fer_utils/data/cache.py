"""On-disk cache of decoded datasets, so loading FER2013 a second time takes well under a second.

A cache entry is one uncompressed ``.npz`` (no pickles) keyed by the source's path, size and
modification times and the load options; any change to the source makes a new key. Entries are
written atomically, so an interrupted write never leaves a broken cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from fer_utils.core.atomic import atomic_path
from fer_utils.core.locations import default_cache_dir
from fer_utils.data.faceset import FaceSet, LoadedDataset, Skipped

CACHE_VERSION = 2  # 2: ctime in the fingerprint, fingerprint stored in the entry


def source_fingerprint(path: Path, options: dict) -> str:
    """A hash of the source's files (relative path, size, mtime, ctime) and the load options.

    ctime changes whenever a file's content is written, even when the writer restores size and
    mtime (``touch -r``, some sync tools), so a changed file always makes a new key.
    """
    h = hashlib.sha256(json.dumps([CACHE_VERSION, str(path.resolve()), options], sort_keys=True).encode())
    if path.is_file():
        st = path.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}".encode())
    else:
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for name in sorted(filenames):
                file = os.path.join(dirpath, name)
                try:
                    st = os.stat(file)
                except OSError:  # a broken link or a loop: the loader reports it; hash the link itself
                    st = os.lstat(file)
                h.update(f"{os.path.relpath(file, path)}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}\n".encode())
    return h.hexdigest()[:20]


def cache_file(path: Path, options: dict, cache_dir: Path | None = None) -> Path:
    """Where the cache entry for ``path`` loaded with ``options`` lives."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in path.resolve().name)[:40]
    return (cache_dir or default_cache_dir()) / f"{stem}-{source_fingerprint(path, options)}.npz"


def save_cached(dataset: LoadedDataset, file: Path) -> None:
    """Write a LoadedDataset to ``file`` atomically."""
    arrays: dict[str, np.ndarray] = {}
    for name, faces in dataset.splits.items():
        arrays[f"{name}/images"] = faces.images
        arrays[f"{name}/labels"] = faces.labels
        arrays[f"{name}/sources"] = faces.sources
        if faces.soft_labels is not None:
            arrays[f"{name}/soft_labels"] = faces.soft_labels
    meta = {
        "format": dataset.format,
        "source": dataset.source,
        "classes": list(dataset.classes),
        "splits": list(dataset.splits),
        "notes": dataset.notes,
        "skipped": [[s.source, s.reason] for s in dataset.skipped],
        "entry": file.name,
    }
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_path(file) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load_cached(file: Path) -> LoadedDataset | None:
    """Read a cache entry, or None if it is missing, damaged or not this entry (it is then rebuilt)."""
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("entry") != file.name:  # copied or renamed from another source's entry
                return None
            classes = tuple(meta["classes"])
            splits = {
                name: FaceSet(
                    data[f"{name}/images"],
                    data[f"{name}/labels"],
                    classes,
                    data[f"{name}/sources"],
                    data.get(f"{name}/soft_labels", None),
                )
                for name in meta["splits"]
            }
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
        return None
    return LoadedDataset(
        splits,
        meta["format"],
        meta["source"],
        classes,
        [Skipped(*s) for s in meta["skipped"]],
        meta["notes"] + [f"loaded from cache {file}"],
    )
