"""Shared fixtures: every test makes its own small data; nothing is downloaded."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_utils.data import FaceSet, synthetic_faces
from fer_utils.data.fer2013_csv import write_fer2013_csv

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
"""Debian's Chromium, which the browser tests drive through Playwright (CI installs it)."""
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's ~/.cache: each test session gets its own dataset cache."""
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("FER_CHECKPOINT", raising=False)


@pytest.fixture(scope="session")
def small_faces() -> FaceSet:
    """14 synthetic faces, two per class."""
    return synthetic_faces(n_per_class=2, seed=3)


def save_class_folders(root: Path, faces: FaceSet, names: dict[str, str] | None = None, prefix: str = "") -> Path:
    """Write faces as root/<class folder>/<prefix>i.png; ``names`` renames class folders."""
    for i, (image, label) in enumerate(zip(faces.images, faces.labels, strict=True)):
        folder = root / (names or {}).get(faces.classes[label], faces.classes[label])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{prefix}{i}.png")
    return root


@pytest.fixture
def class_folder_dataset(tmp_path, small_faces) -> Path:
    return save_class_folders(tmp_path / "faces", small_faces)


@pytest.fixture
def fer2013_csv(tmp_path, small_faces) -> Path:
    """A FER2013-format CSV: Training, PublicTest and PrivateTest rows."""
    return write_fer2013_csv(
        {"train": small_faces, "val": small_faces.subset(np.arange(7)), "test": small_faces.subset(np.arange(7, 14))},
        tmp_path / "fer2013.csv",
    )


@pytest.fixture
def real_data_dir() -> Path:
    """The real FER2013 folder from $FER_DATA_DIR (CI points it at shared/data/fer2013)."""
    path = os.environ.get("FER_DATA_DIR")
    if not path or not Path(path).is_dir():
        pytest.skip("FER_DATA_DIR not set: real-data tests need the FER2013 folder")
    return Path(path)


def save_lite0(path: Path, model) -> Path:
    """Save a Lite0 as a checkpoint that takes 48 px faces (the card every plumbing test uses)."""
    from fer_utils.core.labels import EMOTIONS
    from fer_utils.model.checkpoints import save_checkpoint
    from fer_utils.runtime.description import ModelDescription

    return save_checkpoint(path, model, ModelDescription("efficientnet-lite0", EMOTIONS, 48, (0.5,) * 3, (0.5,) * 3))


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint file of an untrained Lite0 (plumbing tests; not for accuracy)."""
    from fer_utils.model.factory import build_model

    return save_lite0(
        tmp_path_factory.mktemp("ckpt") / "untrained.safetensors", build_model("efficientnet-lite0").eval()
    )


@pytest.fixture
def two_member_ensemble(tmp_path) -> tuple[Path, list]:
    """An ensemble file of two untrained Lite0 members of different weights, and the members."""
    import torch

    from fer_utils.model.assembly import save_ensemble
    from fer_utils.model.factory import build_model

    members, files = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(build_model("efficientnet-lite0"))
        files.append(save_lite0(tmp_path / f"m{seed}.safetensors", members[-1]))
    return save_ensemble(files, tmp_path / "e.safetensors"), members


DETECTABLE = (1, 19)
"""Indices of synthetic_faces(4, seed=5) that OpenCV's frontal-face cascade finds when enlarged."""


def face_photo(positions=((240, 150),), size: int = 160, shape=(480, 640), background: int = 110) -> np.ndarray:
    """A grayscale 'photo' with detectable synthetic faces pasted at ``positions`` (x, y)."""
    import cv2

    faces = synthetic_faces(4, seed=5)
    canvas = np.full(shape, background, np.uint8)
    for (x, y), index in zip(positions, DETECTABLE, strict=False):
        canvas[y : y + size, x : x + size] = cv2.resize(
            faces.images[index], (size, size), interpolation=cv2.INTER_CUBIC
        )
    return canvas


def hand_edited(source: Path, out: Path, updates: dict) -> Path:
    """A copy of ``source`` whose metadata a user edited by hand (update_checkpoint_metadata
    itself refuses to write metadata that would not load)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as f:
        meta = json.loads(f.metadata()["fer_utils"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    save_file(tensors, str(out), metadata={"fer_utils": json.dumps({**meta, **updates})})
    return out


def write_face_video(
    path: Path,
    positions,
    n_frames: int = 60,
    fps: float = 30.0,
    shape=(240, 320),
    size: int = 100,
    noise: float = 0.0,
    seed: int = 0,
) -> Path:
    """An MP4 (OpenCV's VideoWriter) of detectable synthetic faces: ``positions(frame)`` gives the
    (x, y) of each face in that frame, or None where a face is absent; ``noise`` adds per-frame
    Gaussian noise (std in grey levels) so predictions vary from frame to frame."""
    import cv2

    faces = synthetic_faces(4, seed=5)
    patches = [cv2.resize(faces.images[i], (size, size), interpolation=cv2.INTER_CUBIC) for i in DETECTABLE]
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (shape[1], shape[0]))
    for i in range(n_frames):
        canvas = np.full(shape, 110, np.float32)
        for where, patch in zip(positions(i), patches, strict=False):
            if where is not None:
                x, y = where
                canvas[y : y + size, x : x + size] = patch
        if noise:
            canvas += rng.normal(0, noise, shape)
        writer.write(cv2.cvtColor(np.clip(canvas, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


@pytest.fixture
def children():
    """``start(command, **popen)``: a child process in a session of its own, killed with all its
    descendants (SIGKILL to its process group) and waited for when the test ends, however it ends:
    a child that outlives its test never keeps running."""
    import signal
    import subprocess

    started: list[subprocess.Popen] = []

    def start(command, **popen) -> subprocess.Popen:
        started.append(subprocess.Popen(command, start_new_session=True, **popen))
        return started[-1]

    yield start
    for process in started:
        with contextlib.suppress(ProcessLookupError):  # it and its group may have ended already
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> Path:
    """A folder of two short face videos (a.mp4: 6 frames, one still face; b.mp4: 8, one moving)."""
    folder = tmp_path_factory.mktemp("videos")
    write_face_video(folder / "a.mp4", lambda i: [(110, 70)], n_frames=6)
    write_face_video(folder / "b.mp4", lambda i: [(60 + 5 * i, 70)], n_frames=8, seed=1)
    return folder
