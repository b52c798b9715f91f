"""Start-up cost of the `fer` command: wall time and peak memory of `fer --help` and of
`fer predict photo.jpg` (the second run, with the model's ONNX export cached), whether
`import fer_utils` and a prediction import torch, and the size of the inference-only install.

    python benchmarks/bench_startup.py                      # this checkout
    python benchmarks/bench_startup.py --before 89ba16e     # and an older commit, in the same run
    python benchmarks/bench_startup.py --inference-venv .venv-inference

Each command runs ``--repeat`` times (default 5) after one warm-up; the median is printed.
Timings depend on what else the machine is doing: compare figures from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PHOTO = REPO / "fer_utils" / "assets" / "astronaut.jpg"

LAUNCH = (
    "import runpy, sys; source = sys.argv.pop(1); "
    "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in str(getattr(f, '__module__', ''))]; "
    "sys.path.insert(0, source); runpy.run_module('fer_utils.cli', run_name='__main__', alter_sys=True)"
)
"""``fer`` from the checkout at argv[1]: an editable install's import hook would otherwise answer
``import fer_utils`` with this checkout whatever PYTHONPATH says."""


def fer_at(source: Path, python: str = sys.executable) -> list[str]:
    """The ``fer`` command of the checkout at ``source``."""
    return [python, "-c", LAUNCH, str(source)]


@contextlib.contextmanager
def checked_out(rev: str) -> Iterator[Path]:
    """A temporary git worktree of revision ``rev``, removed afterwards."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "checkout"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(folder), rev], check=True)
        try:
            yield folder
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(folder)], check=False)


def measure(command: list[str], env: dict[str, str], repeat: int) -> float:
    """Median wall seconds of ``command`` over ``repeat`` runs, after one warm-up run."""
    walls = []
    for i in range(repeat + 1):
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
        if i:
            walls.append(wall)
    return statistics.median(walls)


def peak_of(command: list[str], env: dict[str, str]) -> float:
    """Peak RSS (MB) of one run of ``command``, measured by GNU time."""
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *command], env=env, capture_output=True, text=True, check=True)
    return int(done.stderr.strip().splitlines()[-1]) / 1024


def imports_torch(python: str, code: str, env: dict[str, str], source: Path) -> bool:
    done = subprocess.run(
        [python, "-c", f"import sys\n{code}\nprint('torch' in sys.modules)", str(source)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().endswith("True")


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def report(label: str, source: Path, python: str, repeat: int, cache: Path) -> None:
    env = {**os.environ, "FER_CACHE_DIR": str(cache), "PYTHONWARNINGS": "ignore"}
    fer = fer_at(source, python)
    help_wall = measure([*fer, "--help"], env, repeat)
    help_peak = peak_of([*fer, "--help"], env)
    predict = [*fer, "predict", str(PHOTO), "--checkpoint", str(REPO / "models" / "fer2013_ensemble.safetensors")]
    subprocess.run(predict, env=env, capture_output=True, check=True)  # export into the cache once
    predict_wall = measure(predict, env, repeat)
    predict_peak = peak_of(predict, env)
    bare = imports_torch(python, LAUNCH.split("runpy.run_module")[0] + "import fer_utils", env, source)
    print(
        f"{label:>10}: fer --help {help_wall:.2f} s, {help_peak:.0f} MB | fer predict (cache warm) "
        f"{predict_wall:.2f} s, {predict_peak:.0f} MB | import fer_utils imports torch: {bare}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=None, metavar="REV", help="also measure this git revision")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--inference-venv", default=None, help="report this inference-only venv's size")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (other work on the machine slows these)")
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(scratch) / "cache"
        if args.before:
            with checked_out(args.before) as before:
                report(f"before {args.before[:8]}", before, sys.executable, args.repeat, Path(scratch) / "cache0")
        report("now", REPO, sys.executable, args.repeat, cache)
        if args.inference_venv:
            venv = Path(args.inference_venv)
            onnx = Path(scratch) / "model.onnx"
            shutil.copyfile(next((cache / "onnx").glob("*.onnx")), onnx)
            python = str(venv / "bin" / "python")
            env = {**os.environ, "FER_CACHE_DIR": str(cache), "PYTHONWARNINGS": "ignore"}
            command = [python, "-m", "fer_utils.cli", "predict", str(PHOTO), "--checkpoint", str(onnx)]
            wall = measure(command, env, args.repeat)
            print(
                f"inference-only install {venv}: {folder_mb(venv):.0f} MB on disk "
                f"(this environment: {folder_mb(Path(sys.prefix)):.0f} MB); fer predict model.onnx "
                f"{wall:.2f} s, {peak_of(command, env):.0f} MB; torch importable: "
                f"{subprocess.run([python, '-c', 'import torch'], capture_output=True).returncode == 0}"
            )


if __name__ == "__main__":
    main()
