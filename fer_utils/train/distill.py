"""Knowledge distillation: one model learns from an ensemble's soft predictions.

The teacher (usually an ensemble, ``fer ensemble``) predicts every training face once; the
probabilities are stored in a small ``.npz`` (float16, keyed by each face's file name so they
can never be matched to the wrong face). A student then trains on targets that mix those
probabilities with the true labels:

    target = distill_weight * teacher probabilities + (1 - distill_weight) * one-hot label

The teacher's "dark knowledge" (a fearful face that looks 30 % surprised) is what a single
model gains from an ensemble without paying for several models at inference.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from fer_utils.core.atomic import atomic_path
from fer_utils.core.errors import FERDataError
from fer_utils.core.outputs import check_outputs
from fer_utils.data.faceset import FaceSet


def face_keys(faces: FaceSet) -> np.ndarray:
    """A key per face that survives moving the dataset: its class folder and file name (or its CSV
    row); the Kaggle FER2013 folders reuse some file names across classes. FERDataError if two
    faces still share a key."""
    keys = np.array([f"{Path(str(s)).parent.name}/{Path(str(s)).name}" for s in faces.sources])
    if len(set(keys)) != len(keys):
        raise FERDataError("some faces share a folder and file name; they cannot key teacher predictions")
    return keys


def faces_fingerprint(faces: FaceSet) -> str:
    """A hash of the faces' pixels and labels in key order: what a teacher file was made from."""
    keys = face_keys(faces)
    order = np.argsort(keys, kind="stable")
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(faces.images[order]).tobytes())
    h.update(np.ascontiguousarray(faces.labels[order]).tobytes())
    return h.hexdigest()[:24]


def save_teacher(
    path: str | os.PathLike, faces: FaceSet, probabilities: np.ndarray, info: dict, overwrite: bool = False
) -> Path:
    """Store a teacher's probabilities for ``faces`` (float16, compressed) with a description and a
    fingerprint of the faces, so the file is refused for any other data."""
    keys = face_keys(faces)
    expected = (len(faces), len(faces.classes))
    if probabilities.shape != expected:
        raise FERDataError(f"teacher probabilities have shape {probabilities.shape}, expected {expected}")
    check_outputs({"teacher probabilities": path}, overwrite=overwrite)
    meta = {**info, "classes": list(faces.classes), "n": len(faces), "faces_fingerprint": faces_fingerprint(faces)}
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f, keys=keys, probabilities=probabilities.astype(np.float16), meta=np.array(json.dumps(meta))
        )
    return path


def load_teacher(path: str | os.PathLike, faces: FaceSet) -> np.ndarray:
    """The stored teacher probabilities (N, C) in the order of ``faces``; FERDataError when the file
    is not a teacher file, was made for other classes, or lacks some of these faces."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, probabilities, meta = (
                data["keys"],
                data["probabilities"].astype(np.float32),
                json.loads(str(data["meta"])),
            )
    except FileNotFoundError:
        raise FERDataError(f"{path}: teacher file not found; make one with `fer teacher`") from None
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise FERDataError(f"{path}: not a teacher file written by `fer teacher` ({err})") from None
    if len(keys) == 0:
        raise FERDataError(f"{path}: holds no faces; make it from the training data with `fer teacher`")
    if probabilities.ndim != 2 or probabilities.shape != (len(keys), len(meta.get("classes", ()))):
        raise FERDataError(
            f"{path}: probabilities have shape {probabilities.shape}, expected ({len(keys)}, "
            f"{len(meta.get('classes', ()))}); the file is damaged: make it again with `fer teacher`"
        )
    if tuple(meta.get("classes", ())) != tuple(faces.classes):
        raise FERDataError(f"{path}: made for classes {meta.get('classes')}, but the data has {list(faces.classes)}")
    row = {k: i for i, k in enumerate(keys)}
    wanted = face_keys(faces)
    missing = [k for k in wanted if k not in row]
    if missing:
        raise FERDataError(
            f"{path}: has no teacher prediction for {len(missing)} of {len(wanted)} training faces "
            f"(e.g. {missing[0]}); make it from the same training data"
        )
    if not np.isfinite(probabilities).all():
        raise FERDataError(f"{path}: holds NaN or infinite probabilities")
    sums = probabilities.sum(axis=1)
    if (probabilities < 0).any() or not np.allclose(sums, 1.0, atol=0.02):
        bad = int(np.argmax((probabilities < 0).any(axis=1) | ~np.isclose(sums, 1.0, atol=0.02)))
        raise FERDataError(
            f"{path}: the probabilities of face {keys[bad]} sum to {sums[bad]:.3g} (each face's must be "
            "non-negative and sum to 1); make the file again with `fer teacher`"
        )
    if len(keys) != len(wanted) or meta.get("faces_fingerprint") != faces_fingerprint(faces):
        raise FERDataError(
            f"{path}: was made from other faces than these {len(wanted)} training faces "
            f"(data {meta.get('data', 'unknown')!r}); make the teacher file from the same training data with `fer teacher`"
        )
    return probabilities[[row[k] for k in wanted]]


def distillation_targets(faces: FaceSet, teacher: np.ndarray, weight: float) -> FaceSet:
    """``faces`` with soft labels: ``weight`` x teacher probabilities + (1 - weight) x one-hot labels."""
    one_hot = np.eye(len(faces.classes), dtype=np.float32)[faces.labels]
    teacher = teacher / teacher.sum(axis=1, keepdims=True)  # float16 storage rounds the sums slightly
    soft = (weight * teacher + (1 - weight) * one_hot).astype(np.float32)
    return FaceSet(faces.images, faces.labels, faces.classes, faces.sources, soft)
