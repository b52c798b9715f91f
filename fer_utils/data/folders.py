"""Image-folder datasets: one folder per class, optionally under train/ and test/ (Kaggle FER2013).

File names that carry FER2013 prefixes (``Training_``, ``PublicTest_``, ``PrivateTest_``) are
split by them, so the Kaggle test folder yields PublicTest (val) and PrivateTest (test).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fer_utils.core.errors import FERDataError
from fer_utils.core.labels import CONTEMPT, EMOTIONS, FER2013_USAGES, SPLIT_ALIASES, SPLITS, canonical_name, class_names
from fer_utils.data.faceset import FaceSet, LoadedDataset, Skipped
from fer_utils.data.images import DEFAULT_FACE_SIZE, files_under, is_image_file, read_face

SPLIT_FOLDERS: dict[str, str] = SPLIT_ALIASES
"""Top-level folder names of split layouts, mapped to split keys."""

FILE_PREFIX_SPLITS: dict[str, str] = {f"{usage.lower()}_": key for key, usage in FER2013_USAGES.items()}


@dataclass
class ClassFolderScan:
    """Image files found under a class-folder dataset, before decoding."""

    files: list[tuple[Path, int]]  # (path, class index)
    skipped: list[Skipped]
    notes: list[str]


def _subfolders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def scan_class_folders(root: Path, include_contempt: bool = False) -> ClassFolderScan:
    """List the images under ``root/<class>/`` with their class index.

    Folder names are matched through the synonym table (``happiness`` -> happy, ``0_angry``
    -> angry). Unknown folder names are an error naming them; ``contempt`` is dropped with a
    note unless 8-class mode is on; non-image files are reported as skipped.
    """
    classes = class_names(include_contempt)
    folders = _subfolders(root)
    if not folders:
        raise FERDataError(
            f"{root}: no class folders found; expected one folder per emotion "
            f"({', '.join(EMOTIONS)}) holding its images"
        )
    files: list[tuple[Path, int]] = []
    skipped: list[Skipped] = []
    notes: list[str] = []
    unknown = [f.name for f in folders if canonical_name(f.name) is None]
    if unknown:
        raise FERDataError(
            f"{root}: unknown class folder(s) {', '.join(unknown)}; rename each to one of "
            f"{', '.join(EMOTIONS)} (or a synonym such as happiness, sadness) or move it out"
        )
    for folder in folders:
        name = canonical_name(folder.name)
        entries, broken = files_under(folder)
        images = [p for p in entries if is_image_file(p)]
        skipped += broken
        skipped += [
            Skipped(str(p), "not an image file (by extension)")
            for p in entries
            if not is_image_file(p) and not p.name.startswith(".")
        ]
        if name == CONTEMPT and not include_contempt:
            if images:
                notes.append(
                    f"dropped {len(images)} images in {folder}: contempt is not one of the seven "
                    "classes (use 8-class mode, include_contempt=True / --include-contempt, to keep them)"
                )
            continue
        if not images:
            notes.append(f"class folder {folder} holds no images")
            continue
        files += [(p, classes.index(name)) for p in images]
    return ClassFolderScan(files, skipped, notes)


def _read_or_skip(item: tuple[Path, int], size: int) -> np.ndarray | str:
    try:
        return read_face(item[0], size)
    except FERDataError as err:
        return err.reason
    except Exception as err:  # noqa: BLE001 - one odd file never sinks a whole dataset
        return f"cannot decode ({type(err).__name__}: {err})"


def decode_faces(
    files: list[tuple[Path, int]], classes: tuple[str, ...], size: int, progress: bool = True, workers: int = 2
) -> tuple[FaceSet, list[Skipped]]:
    """Decode listed image files into a FaceSet; unreadable files are skipped and reported."""
    images = np.empty((len(files), size, size), dtype=np.uint8)
    keep = np.zeros(len(files), dtype=bool)
    skipped: list[Skipped] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda item: _read_or_skip(item, size), files, chunksize=64)
        for i, result in enumerate(
            tqdm(
                results, total=len(files), desc="decoding images", disable=not progress or len(files) < 2000, unit="img"
            )
        ):
            if isinstance(result, str):
                skipped.append(Skipped(str(files[i][0]), result))
            else:
                images[i] = result
                keep[i] = True
    labels = np.array([label for _, label in files], dtype=np.int64)
    sources = np.array([str(p) for p, _ in files])
    return FaceSet(images[keep], labels[keep], classes, sources[keep]), skipped


def _prefix_split(path: Path) -> str | None:
    lower = path.name.lower()
    return next((split for prefix, split in FILE_PREFIX_SPLITS.items() if lower.startswith(prefix)), None)


def split_by_file_prefix(faces: FaceSet, default: str) -> dict[str, FaceSet]:
    """Split faces by FER2013 file-name prefixes when every file has one; else one split ``default``."""
    prefixes = [_prefix_split(Path(s)) for s in faces.sources]
    if not faces.sources.size or any(p is None for p in prefixes):
        return {default: faces}
    prefixes_arr = np.array(prefixes)
    return {split: faces.subset(prefixes_arr == split) for split in SPLITS if (prefixes_arr == split).any()}


def is_split_layout(root: Path) -> bool:
    """True when ``root`` holds split folders (train/, test/, ...) rather than class folders."""
    names = [p.name.lower() for p in _subfolders(root)]
    return bool(names) and any(n in SPLIT_FOLDERS for n in names) and all(canonical_name(n) is None for n in names)


def load_image_folders(
    root: str | os.PathLike, size: int = DEFAULT_FACE_SIZE, include_contempt: bool = False, progress: bool = True
) -> LoadedDataset:
    """Load a class-folder dataset, or a train/test layout of them (Kaggle FER2013), into memory.

    Every image is converted to a ``size`` x ``size`` grayscale face whatever its size, mode
    (RGB, RGBA, palette, 16-bit) or format. Corrupt, truncated and non-image files are skipped
    and listed in ``skipped``.
    """
    root = Path(root)
    if not root.exists():
        raise FERDataError(f"{root}: no such file or folder")
    if not root.is_dir():
        raise FERDataError(f"{root}: not a folder")
    classes = class_names(include_contempt)
    layout = "kaggle-folders" if is_split_layout(root) else "class-folders"
    split_dirs = (
        {SPLIT_FOLDERS[p.name.lower()]: p for p in _subfolders(root) if p.name.lower() in SPLIT_FOLDERS}
        if layout == "kaggle-folders"
        else {"all": root}
    )
    notes = [
        f"ignored folder {p}"
        for p in _subfolders(root)
        if layout == "kaggle-folders" and p.name.lower() not in SPLIT_FOLDERS
    ]
    scans = {split: scan_class_folders(path, include_contempt) for split, path in split_dirs.items()}
    skipped = [s for scan in scans.values() for s in scan.skipped]
    notes += [n for scan in scans.values() for n in scan.notes]
    n_files = sum(len(scan.files) for scan in scans.values())
    if not n_files:
        raise FERDataError(f"{root}: no images found in its class folders")

    splits: dict[str, FaceSet] = {}
    for split, scan in scans.items():
        faces, bad = decode_faces(scan.files, classes, size, progress)
        skipped += bad
        for name, subset in split_by_file_prefix(faces, split).items():
            if len(subset):
                splits[name] = FaceSet.concat([splits[name], subset]) if name in splits else subset
    if not splits:
        first = next(s for s in skipped if s.reason != "not an image file (by extension)")
        raise FERDataError(
            f"{root}: none of its {n_files} image files could be read (first: {first.source}: {first.reason})"
        )
    return LoadedDataset(splits, layout, str(root), classes, skipped, notes)
