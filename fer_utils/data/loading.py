"""One entry point for every dataset format: ``load_dataset(path)`` finds out what ``path`` is."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from fer_utils.core.errors import FERDataError
from fer_utils.core.labels import class_names
from fer_utils.data.cache import cache_file, load_cached, save_cached
from fer_utils.data.faceset import FaceSet, LoadedDataset, stratified_split
from fer_utils.data.fer2013_csv import load_fer2013_csv
from fer_utils.data.ferplus import is_ferplus_layout, load_ferplus, load_ferplus_folders
from fer_utils.data.folders import load_image_folders
from fer_utils.data.images import DEFAULT_FACE_SIZE, files_under, is_image_file
from fer_utils.data.synthetic import load_synthetic

SYNTHETIC = "synthetic"
MAX_SYNTHETIC_SCALE = 20.0
"""``synthetic:20`` is about 100,000 faces (0.2 GB at 48 px); larger scales would only fill memory."""


def default_data_path() -> str:
    """``$FER_DATA_DIR`` when set, else the built-in synthetic faces."""
    return os.environ.get("FER_DATA_DIR") or SYNTHETIC


def dataset_files(path: str | os.PathLike | None = None) -> list[Path]:
    """The files ``load_dataset(path)`` may read (a file; the images and CSVs inside a folder;
    nothing for synthetic faces): what an output path must never replace."""
    path = default_data_path() if path is None else str(path)
    if path == SYNTHETIC or path.startswith(SYNTHETIC + ":"):
        return []
    if not Path(path).is_dir():
        return [Path(path)]
    found, _ = files_under(Path(path))
    return [p for p in found if p.suffix.lower() == ".csv" or is_image_file(p)]


def _synthetic_scale(path: str) -> float:
    """The scale of ``synthetic:0.2`` (1 for ``synthetic``), within ``MAX_SYNTHETIC_SCALE``."""
    try:
        scale = float(path.split(":", 1)[1]) if ":" in path else 1.0
    except ValueError:
        scale = math.nan
    if not (0 < scale <= MAX_SYNTHETIC_SCALE):  # NaN fails too
        raise FERDataError(
            f"bad synthetic size {path!r}: use 'synthetic' or a scale in (0, {MAX_SYNTHETIC_SCALE:g}], e.g. 'synthetic:0.2'"
        )
    return scale


def _read_dataset(
    source: Path, size: int, include_contempt: bool, ferplus: str | os.PathLike | None, mode: str, progress: bool
) -> LoadedDataset:
    """Read ``source`` in its format (no cache): FER+ folders, class folders, FER2013 CSV (with FER+ labels)."""
    if source.is_dir() and is_ferplus_layout(source):
        return load_ferplus_folders(source, size, mode, include_contempt, progress)
    if source.is_dir():
        return load_image_folders(source, size, include_contempt, progress)
    if ferplus:
        return load_ferplus(source, ferplus, mode, include_contempt)
    if source.suffix.lower() == ".csv":
        dataset = load_fer2013_csv(source)
        if dataset.splits and next(iter(dataset.splits.values())).image_size != size:
            dataset = resize_dataset(dataset, size)
        return dataset
    raise FERDataError(f"{source}: not a CSV file or a folder; give a FER2013 CSV or a folder of class folders")


def load_dataset(
    path: str | os.PathLike | None = None,
    size: int = DEFAULT_FACE_SIZE,
    *,
    include_contempt: bool = False,
    ferplus: str | os.PathLike | None = None,
    ferplus_mode: str = "majority",
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = True,
) -> LoadedDataset:
    """Load ``path``: a FER2013 CSV, a Kaggle train/test folder, a class-folder dataset, or ``synthetic``.

    ``synthetic:0.2`` scales the synthetic splits (for quick runs). ``ferplus`` points at
    ``fer2013new.csv`` to use FER+ labels over a FER2013 CSV. Real datasets are cached on disk
    after the first load (see :mod:`fer_utils.data.cache`); ``cache=False`` skips that.
    """
    path = default_data_path() if path is None else str(path)
    if path == SYNTHETIC or path.startswith(SYNTHETIC + ":"):
        return load_synthetic(seed, size, _synthetic_scale(path), class_names(include_contempt))
    source = Path(path).expanduser()
    if not source.exists():
        raise FERDataError(
            f"{source}: no such file or folder. Give a FER2013 CSV, a folder of class folders, "
            "or 'synthetic' (see data/README.md for how to get FER2013)"
        )
    options = {
        "size": size,
        "contempt": include_contempt,
        "ferplus": str(ferplus) if ferplus else None,
        "mode": ferplus_mode,
    }
    if ferplus:
        options["ferplus_stat"] = os.stat(ferplus).st_mtime_ns if Path(ferplus).exists() else None
    entry = cache_file(source, options, Path(cache_dir) if cache_dir else None) if cache else None
    if entry is not None and (cached := load_cached(entry)) is not None:
        return cached
    dataset = _read_dataset(source, size, include_contempt, ferplus, ferplus_mode, progress)
    if entry is not None:
        try:
            save_cached(dataset, entry)
        except OSError as err:
            dataset.notes.append(f"could not write cache {entry}: {err}")
    return dataset


def resize_dataset(dataset: LoadedDataset, size: int) -> LoadedDataset:
    """Resize every split's faces to ``size`` x ``size`` (for CSVs stored at another size)."""
    from fer_utils.data.images import square_resize

    splits = {}
    for name, faces in dataset.splits.items():
        images = np.array([square_resize(image, size) for image in faces.images], dtype=np.uint8).reshape(
            -1, size, size
        )
        splits[name] = FaceSet(
            images,
            faces.labels,
            faces.classes,
            faces.sources,
            faces.soft_labels,
        )
    return LoadedDataset(splits, dataset.format, dataset.source, dataset.classes, dataset.skipped, dataset.notes)


def training_splits(dataset: LoadedDataset, val_fraction: float = 0.1, seed: int = 0) -> tuple[FaceSet, FaceSet]:
    """The (train, validation) pair to train on.

    Uses the dataset's own validation split when it has one (FER2013: PublicTest); otherwise
    carves a stratified ``val_fraction`` out of the training faces (or of ``all``).
    """
    base = dataset.splits.get("train") or dataset.splits.get("all")
    if base is None:
        raise FERDataError(
            f"{dataset.source}: no training split (found {', '.join(dataset.splits)}); "
            "point at the training data or the dataset root"
        )
    if "val" in dataset.splits:
        return base, dataset.splits["val"]
    return stratified_split(base, val_fraction, seed)
