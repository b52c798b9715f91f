"""Support for the notebooks: parameters overridable by environment variables, the data to use,
and the FAST switch that makes every notebook run in seconds on synthetic faces (``FER_FAST=1``).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from fer_utils.core.errors import FERConfigError
from fer_utils.core.locations import ASSETS_DIR, REPO_DIR

T = TypeVar("T", int, float, str, bool)


def fast_mode() -> bool:
    """True when ``FER_FAST=1``: synthetic faces and seconds-long runs (CI runs every notebook so).
    Read on every call, so setting the variable later in a session takes effect."""
    return os.environ.get("FER_FAST", "0").strip().lower() in ("1", "true", "yes")


def __getattr__(name: str) -> Any:
    """``course.FAST``: the value of :func:`fast_mode` at the moment it is read (not at import time)."""
    if name == "FAST":
        return fast_mode()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


KAGGLE_FER2013 = "msambare/fer2013"


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules


def param(name: str, default: T, fast: T | None = None) -> T:
    """A notebook parameter: ``$NAME`` when set (converted to the default's type), else ``fast`` in
    FAST mode, else ``default``."""
    raw = os.environ.get(name)
    if raw is None:
        return fast if (fast_mode() and fast is not None) else default
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes")  # type: ignore[return-value]
    try:
        return type(default)(raw)
    except ValueError:
        raise FERConfigError(
            f"environment variable {name}={raw!r} is not a valid {type(default).__name__} "
            f"(e.g. {name}={default}); fix or unset it"
        ) from None


def dataset_path(fast_size: float = 0.3) -> str:
    """Which data a notebook uses: synthetic faces in FAST mode, else ``$FER_DATA_DIR``, else a
    kagglehub download of FER2013 in Colab, else the synthetic faces (with a visible note)."""
    if fast_mode():
        return f"synthetic:{fast_size}"
    if os.environ.get("FER_DATA_DIR"):
        return os.environ["FER_DATA_DIR"]
    if in_colab():
        import kagglehub

        path = kagglehub.dataset_download(KAGGLE_FER2013)
        print(f"FER2013 downloaded to {path}")
        return str(path)
    print(
        "NOTE: no FER_DATA_DIR set, so this notebook uses the built-in synthetic faces. "
        "See data/README.md to get FER2013, then set FER_DATA_DIR and rerun."
    )
    return "synthetic"


def setup(extras: str = "course") -> None:
    """The rest of every notebook's first cell. In Colab (after the cell cloned the course), install
    what this notebook needs: the package's extras (``course``, ``export``, ``app``; see
    pyproject.toml), on top of what Colab already has, changing none of Colab's packages. Everywhere,
    print what the lesson runs on."""
    import importlib.metadata
    import subprocess

    if in_colab():
        target = f"{repo_root()}[{extras}]" if extras else str(repo_root())
        with _keep_installed_versions() as constraints:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "-e", target, "-c", constraints],
                capture_output=True,
                text=True,
                check=False,
            )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise SystemExit(f"Could not install the course ({target}) beside Colab's own packages: {last}")
    from fer_utils import __version__

    line = f"fer_utils {__version__}"
    try:
        line += f", torch {importlib.metadata.version('torch')}"
    except importlib.metadata.PackageNotFoundError:
        print(line + " (no torch: this install predicts with exported models only)")
        return
    import torch

    _release_memory_after_each_cell()
    gpu = torch.cuda.is_available()
    print(f"{line}, {torch.get_num_threads()} CPU threads, GPU: {gpu}")
    if in_colab() and not gpu:
        print("Tip: Runtime > Change runtime type > T4 GPU, then rerun: training (04, 09) then runs on the GPU.")


_PEP440 = re.compile(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[a-z0-9.]+)?", re.IGNORECASE)


@contextlib.contextmanager
def _keep_installed_versions() -> Iterator[str]:
    """A pip constraints file pinning every installed distribution to its version: pip then picks
    versions of the course's packages that fit Colab's (e.g. an onnx that works with Colab's
    protobuf) instead of upgrading Colab's own, which would break the learner's other notebooks."""
    import importlib.metadata
    import tempfile

    pins: dict[str, str] = {}
    for dist in importlib.metadata.distributions():  # in sys.path order: the first of a name is the one imported
        name, version = dist.metadata["Name"] or "", dist.version or ""
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key and key not in pins and _PEP440.fullmatch(version):  # a distro's "1.2-3ubuntu1" is no pip version
            pins[key] = f"{name}=={version}"
    pins.pop("fer-utils", None)  # the course itself (a rerun of the cell): pip refuses a version for a folder
    with tempfile.NamedTemporaryFile("w", suffix="-installed.txt", delete=False) as out:
        out.write("\n".join(sorted(pins.values())) + "\n")
    try:
        yield out.name
    finally:
        os.unlink(out.name)


def run_time_text(seconds: float) -> str:
    """How the course writes a measured run time: seconds under two minutes, else whole minutes
    (benchmarks/bench_course.py measures them; the course map quotes them)."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{round(seconds / 60)} min"


def _after_cell(result: object = None) -> None:
    """IPython's post_run_cell event: hand the memory a cell freed back to the system."""
    from fer_utils.model.devices import release_freed_memory

    release_freed_memory()


def _release_memory_after_each_cell() -> None:
    """In a notebook kernel, return freed memory to the system after every cell: glibc otherwise
    keeps what an export, a batch of Grad-CAM or a timing loop freed, and a kernel's memory only
    grows from lesson to lesson (benchmarks/bench_course.py measures each notebook's peak)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and _after_cell not in shell.events.callbacks["post_run_cell"]:
        shell.events.register("post_run_cell", _after_cell)


def repo_root() -> Path:
    """The repository folder (parent of fer_utils)."""
    return REPO_DIR


def runs_dir() -> Path:
    """Where notebooks write their training runs (git-ignored)."""
    return repo_root() / "runs"


def checkpoint_for(data: str) -> Path:
    """The model a notebook should explain for ``data``: ``$FER_CHECKPOINT`` if set; for synthetic
    faces a small model trained on them (once, about half a minute, kept in runs/course/); else the shipped
    FER2013 model."""
    if os.environ.get("FER_CHECKPOINT"):
        return Path(os.environ["FER_CHECKPOINT"])
    if data.startswith("synthetic"):
        # the epochs in the name: an older 4-epoch model is not reused
        out = runs_dir() / "course" / "synthetic-quick-8"
        best = out / "best.safetensors"
        if not best.is_file():
            from fer_utils.data import load_dataset, training_splits
            from fer_utils.train.loop import TrainConfig, train

            print(f"training a small model on synthetic faces (once; saved in {out}) ...")
            train_set, val_set = training_splits(load_dataset("synthetic:0.3"))
            # 8 epochs (about half a minute): after 4 it read about a third of the faces, too close to
            # chance for the lessons' claims (a turned face read worse, notebook 02) to show on it
            train(TrainConfig(epochs=8, image_size=48), train_set, val_set, out, progress=False)
        return best
    from fer_utils.predict.predictor import default_checkpoint

    return default_checkpoint()


def sample_photo() -> Path:
    """A sample portrait for the lessons: NASA's public-domain photo of astronaut Eileen Collins
    (the one scikit-image ships as ``data.astronaut()``), stored in the package as a JPEG."""
    return ASSETS_DIR / "astronaut.jpg"


def sample_face(side: int = 160) -> np.ndarray:
    """The sample portrait's face as a ``side`` x ``side`` grayscale patch, cut square around
    YuNet's box with some margin: a real face to paste into made-up videos (notebook 10,
    benchmarks/bench_video.py)."""
    import cv2

    from fer_utils.data.images import load_gray
    from fer_utils.faces.detection import YuNetDetector

    gray, _ = load_gray(sample_photo())
    box = YuNetDetector().detect(gray)[0]
    half = int(max(box.w, box.h) * 0.8)
    cx, cy = box.x + box.w // 2, box.y + box.h // 2
    crop = gray[max(0, cy - half) : cy + half, max(0, cx - half) : cx + half]
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)


REPOSITORY = "https://github.com/fer-course/fer-course"
"""The course's GitHub repository: Colab installs it from here and the notebooks' "Open in Colab"
badges point here. Defined once; a fork runs ``python -m fer_utils.course --repository URL``,
which rewrites this line and every notebook's setup cell and badge."""

LESSONS_FILE = Path("fer_utils", "course", "lessons.py")
"""This file, relative to the repository: where ``REPOSITORY`` is defined."""

_REPOSITORY_LINE = re.compile(r'^(REPOSITORY = )"[^"]*"', re.MULTILINE)
_BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^/\s)]+/[^/\s)]+/blob/")


def _github_path(url: str) -> str:
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", url)
    if not match:
        raise ValueError(f"repository must look like https://github.com/OWNER/NAME, got {url!r}")
    return f"{match[1]}/{match[2]}"


def set_repository(url: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Point the course at ``url``: the ``REPOSITORY`` line here and in every notebook's setup cell,
    and every Colab badge (notebooks and README). Returns the files changed (written atomically)."""
    from fer_utils.core.atomic import write_text_atomic

    owner_name = _github_path(url)
    root = Path(root) if root is not None else repo_root()
    changed = []
    readme = [root / "README.md"] if (root / "README.md").is_file() else []
    for path in [root / LESSONS_FILE, *readme, *sorted((root / "notebooks").glob("*.ipynb"))]:
        text = path.read_text(encoding="utf-8")
        new = _REPOSITORY_LINE.sub(lambda m: f'{m[1]}"{url}"', text) if path.suffix == ".py" else text
        if path.suffix == ".ipynb":
            new = re.sub(r'(REPOSITORY = \\")[^"\\]*(\\")', lambda m: f"{m[1]}{url}{m[2]}", new)
        if path.suffix != ".py":
            new = _BADGE.sub(f"https://colab.research.google.com/github/{owner_name}/blob/", new)
        if new != text:
            write_text_atomic(path, new)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    """``python -m fer_utils.course --check``: what this environment holds, for a bug report;
    ``--repository URL``: make a fork's notebooks install the fork."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fer_utils.course", description=main.__doc__)
    task = parser.add_mutually_exclusive_group(required=True)
    task.add_argument(
        "--check", action="store_true", help="print platform, versions, extras and which notebooks can run"
    )
    task.add_argument("--repository", help="https://github.com/OWNER/NAME of your fork")
    args = parser.parse_args(argv)
    if args.check:
        from fer_utils.course.environment import environment_report

        print(environment_report().text())
        return 0
    try:
        changed = set_repository(args.repository)
    except ValueError as err:
        parser.error(str(err))
    print(f"{len(changed)} files now point at {args.repository}")
    return 0
