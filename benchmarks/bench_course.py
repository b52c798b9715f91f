"""The course as a learner runs it: every notebook executed on the real data, timed, its memory watched.

Each notebook runs in a fresh kernel (nbclient) with ``FER_DATA_DIR`` / ``FER_FERPLUS_DIR`` set, in
full mode, except the notebooks that train for an hour or more (``FAST_ONLY``), which run with
``FER_FAST=1`` and say so in the table. For each it records the wall time, the kernel's peak RSS
(the kernel and its children, sampled four times a second), the slowest cells, and whether every
cell ran: each lesson checks its own claims with asserts in its cells, so a claim that the real
data contradicts fails the run here. Nothing is written into the notebooks (real faces never
reach a saved output); the table goes to ``docs/course-run.json`` and ``docs/course-run.md``, which
the README's course map and notebook 00 quote (tests/test_course.py checks they agree).

    python benchmarks/bench_course.py --data $FER_DATA_DIR --ferplus $FER_FERPLUS_DIR [--only 02 06]

Run it on an otherwise idle machine: times on a shared one are up to 2-4x longer. Asserts nothing;
exits 1 when a notebook failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

from fer_utils.course import run_time_text

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
RESULTS = ROOT / "docs" / "course-run.json"
TABLE = ROOT / "docs" / "course-run.md"
# Notebooks whose full run trains for an hour or more on a 2-core CPU (04: 15 epochs; 09: a
# 12-epoch student): measured in FAST mode, as their first cells offer.
FAST_ONLY = ("04_training", "09_ensembles_and_distillation")


@dataclass
class NotebookRun:
    """One notebook's measured run."""

    notebook: str
    mode: str  # "real data" or "FAST"
    seconds: float
    peak_rss_gb: float
    passed: bool
    error: str = ""
    slowest_cells: list[tuple[int, float]] = field(default_factory=list)
    hungriest_cells: list[tuple[int, float]] = field(default_factory=list)  # (cell, GB at its peak)
    measured_on: str = ""


class MemoryWatch:
    """Samples the resident memory of a process and its children in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.cell_peak = 0  # since the current cell started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss + sum(
                    child.memory_info().rss for child in self.process.children(recursive=True)
                )
                self.peak = max(self.peak, rss)
                self.cell_peak = max(self.cell_peak, rss)
            except psutil.Error:
                pass
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_notebook(path: Path, kernel: str, env: dict[str, str], timeout: int, save: Path | None = None) -> NotebookRun:
    """Execute one notebook in a fresh kernel with ``env``; its outputs are discarded, or written to
    the folder ``save`` (outside the repository: they show real faces) to look at the figures."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    watch: list[MemoryWatch] = []
    cell_times: list[tuple[int, float]] = []
    cell_peaks: list[tuple[int, float]] = []
    started: dict[int, float] = {}
    failed_cell: list[int] = []

    def on_start(**_: object) -> None:
        watch.append(MemoryWatch(client.km.provisioner.process.pid))

    def on_cell_start(cell, cell_index: int, **_: object) -> None:
        started[cell_index] = time.perf_counter()
        if watch:
            watch[0].cell_peak = 0

    def on_cell_done(cell, cell_index: int, **_: object) -> None:
        cell_times.append((cell_index, time.perf_counter() - started.get(cell_index, time.perf_counter())))
        if watch:
            cell_peaks.append((cell_index, round(watch[0].cell_peak / 1e9, 2)))

    def on_cell_error(cell, cell_index: int, **_: object) -> None:
        failed_cell.append(cell_index)

    client = NotebookClient(
        notebook,
        kernel_name=kernel,
        timeout=timeout,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
        on_notebook_start=on_start,
        on_cell_execute=on_cell_start,
        on_cell_executed=on_cell_done,
        on_cell_error=on_cell_error,
    )
    previous = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits this process's environment
    begin = time.perf_counter()
    error = ""
    try:
        client.execute()
    except CellExecutionError as err:
        where = f"cell {failed_cell[0]}: " if failed_cell else ""
        error = f"{where}{err.ename}: {err.evalue}"[:300]
    except Exception as err:  # noqa: BLE001 - a dead kernel (out of memory) or a timeout: record it
        error = f"{type(err).__name__}: {err}"[:300]
    finally:
        os.environ.clear()
        os.environ.update(previous)
    seconds = time.perf_counter() - begin
    peak = watch[0].stop() if watch else 0
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, save / path.name)
    slowest = sorted(cell_times, key=lambda item: -item[1])[:3]
    return NotebookRun(
        notebook=path.stem,
        mode="FAST" if env.get("FER_FAST") == "1" else "real data",
        seconds=round(seconds, 1),
        peak_rss_gb=round(peak / 1e9, 2),
        passed=not error,
        error=error,
        slowest_cells=[(index, round(s, 1)) for index, s in slowest],
        hungriest_cells=sorted(cell_peaks, key=lambda item: -item[1])[:3],
        measured_on=date.today().isoformat(),
    )


RUN_TIME = re.compile(r"(\(measured, docs/course-run\.md\): )(.+?)( on a 2-core CPU)")


def said(run: NotebookRun) -> str:
    """How the course quotes a run: its time, with "FAST mode" before it for a FAST run."""
    return f"FAST mode {run_time_text(run.seconds)}" if run.mode == "FAST" else run_time_text(run.seconds)


def quote_row(line: str, run: NotebookRun) -> str:
    """A course-map row with its run-time column (the fifth) set to ``run``; a FAST run keeps the
    row's note on the full run after the semicolon."""
    cells = line.split("|")  # cells[0] is the empty text before the row's first bar
    old = cells[5].strip()
    note = old.split("; ", 1)[1] if run.mode == "FAST" and "; " in old else ""
    cells[5] = f" {said(run)}{f'; {note}' if note else ''} "
    return "|".join(cells)


def quote_run_times(runs: dict[str, NotebookRun]) -> list[Path]:
    """Write the measured times where the course states them: the course maps of README.md and
    notebook 00 and each notebook's first cell (tests/test_course.py checks they agree)."""
    import nbformat

    from fer_utils.core.atomic import write_text_atomic

    def rows(text: str) -> str:
        return "\n".join(
            quote_row(line, runs[name])
            if (name := next((n for n in runs if line.startswith(f"| [{n}]")), None))
            else line
            for line in text.split("\n")
        )

    changed = []
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if rows(text) != text:
        write_text_atomic(readme, rows(text))
        changed.append(readme)
    for name, run in runs.items():
        path = NOTEBOOKS / f"{name}.ipynb"
        notebook = nbformat.read(path, as_version=4)
        first = notebook.cells[0].source
        notebook.cells[0].source = RUN_TIME.sub(lambda m, run=run: m[1] + said(run) + m[3], first)
        if name.startswith("00_"):
            for cell in notebook.cells:
                cell.source = rows(cell.source)
        text = nbformat.writes(notebook) + "\n"
        if text != path.read_text(encoding="utf-8"):
            write_text_atomic(path, text)
            changed.append(path)
    return changed


def default_kernel() -> str:
    """The learner's kernel (`make learner` installs it) when present, else this interpreter's."""
    from jupyter_client.kernelspec import KernelSpecManager

    return "fer-learner" if "fer-learner" in KernelSpecManager().find_kernel_specs() else "python3"


def write_table(runs: dict[str, NotebookRun]) -> str:
    """The Markdown table of every measured notebook, written next to its JSON."""
    lines = [
        "# The course, measured as a learner runs it",
        "",
        "Written by `python benchmarks/bench_course.py --data $FER_DATA_DIR --ferplus $FER_FERPLUS_DIR`",
        "(each notebook in a fresh kernel, FER2013 and FER+ set; the two notebooks that train for an hour",
        "or more in FAST mode). The README's course map, notebook 00 and each notebook's first cell quote",
        "these times. Measured with the dataset cache and the ONNX exports already made: a learner's very",
        "first notebook also decodes FER2013 once, and the first prediction with a model exports it once",
        "(seconds each). Peak memory is the kernel's resident memory, children included.",
        "",
        "| notebook | mode | wall time | peak memory (kernel) | every cell ran | slowest cells (index: s) | largest cells (index: GB) | measured |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(runs):
        run = runs[name]
        cells = ", ".join(f"{i}: {s:.0f}" for i, s in run.slowest_cells)
        largest = ", ".join(f"{i}: {gb:.1f}" for i, gb in run.hungriest_cells)
        status = "yes" if run.passed else f"no: {run.error}"
        lines.append(
            f"| {name} | {run.mode} | {run_time_text(run.seconds)} | {run.peak_rss_gb:.1f} GB | {status} | {cells} | {largest} | {run.measured_on} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("FER_DATA_DIR", ""), help="FER2013 folder or CSV")
    parser.add_argument("--ferplus", default=os.environ.get("FER_FERPLUS_DIR", ""), help="FER+ image layout")
    parser.add_argument("--only", nargs="*", default=[], help="notebook numbers or names to run (default: all)")
    parser.add_argument("--kernel", default="", help="Jupyter kernel (default: fer-learner if installed)")
    parser.add_argument("--timeout", type=int, default=3 * 3600, help="seconds one cell may take")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/ as it is")
    parser.add_argument("--save", type=Path, help="also write the executed notebooks here (outside the repository)")
    args = parser.parse_args()
    if not args.data:
        parser.error("give --data (FER2013) or set FER_DATA_DIR: the point is the real data")
    if args.save and args.save.resolve().is_relative_to(ROOT):
        parser.error("--save must be outside the repository: executed notebooks hold real faces")
    from fer_utils.core.atomic import write_text_atomic

    kernel = args.kernel or default_kernel()
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        paths = [p for p in paths if any(p.stem.startswith(o) or p.stem == o for o in args.only)]
    known = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    runs = {
        name: NotebookRun(**{**row, "slowest_cells": [tuple(c) for c in row["slowest_cells"]]})
        for name, row in known.items()
    }
    base = {k: v for k, v in os.environ.items() if k not in ("FER_FAST", "OMP_NUM_THREADS", "PYTEST_XDIST_WORKER")}
    base["FER_DATA_DIR"] = str(Path(args.data).resolve())
    if args.ferplus:
        base["FER_FERPLUS_DIR"] = str(Path(args.ferplus).resolve())
    print(f"kernel {kernel}, {os.cpu_count()} CPUs, {platform.machine()}, data {base['FER_DATA_DIR']}", flush=True)
    failed = False
    for path in paths:
        env = {**base, "FER_FAST": "1" if path.stem in FAST_ONLY else "0"}
        run = run_notebook(path, kernel, env, args.timeout, args.save)
        runs[path.stem] = run
        failed |= not run.passed
        print(
            f"{run.notebook}: {run.mode}, {run_time_text(run.seconds)} ({run.seconds:.0f} s), peak {run.peak_rss_gb:.2f} GB, "
            f"{'passed' if run.passed else 'FAILED: ' + run.error}; slowest cells {run.slowest_cells}, "
            f"largest {run.hungriest_cells}",
            flush=True,
        )
        if not args.no_write:  # after each notebook: a long run that is stopped keeps what it measured
            write_text_atomic(RESULTS, json.dumps({k: asdict(v) for k, v in sorted(runs.items())}, indent=1) + "\n")
            write_text_atomic(TABLE, write_table(runs))
    if not args.no_write:
        for path in quote_run_times(runs):
            print(f"quoted the measured times in {path.relative_to(ROOT)}")
    print(write_table(runs))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
