"""``--engine ray``: the same analysis spread over a Ray cluster (the ``scale`` extra).

Each worker is an actor that loads one Predictor once (ONNX Runtime session and detector);
videos go one task per file (or per part of a long one: ``PART_TRACK_IDS``), photos in batches
of ``PHOTOS_PER_FILE``. A worker writes each task's Parquet file whole, under a name fixed by
its inputs, and returns the name and SHA-256; only this process records it in the run's
manifest. When a worker dies mid-task (its process killed, its node lost) the task goes to
another worker and a replacement is started, which joins when the cluster finds it a CPU; the
retry replaces the task's own file: every input's output appears once, whole, and the run
finishes on the workers left. ``address``: a running cluster (``ray start --head`` on one
machine, ``ray start --address`` on the others, or KubeRay); without it a local Ray is started
on this machine. docs/scale.md says how to run it and what was tested.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer_utils.core.errors import FERConfigError, FERDataError, install_hint
from fer_utils.core.interrupts import restore_stop_handlers
from fer_utils.faces.detection import VIDEO_MAX_SIDE
from fer_utils.predict.parquet import PHOTOS_PER_FILE, ParquetRun, write_parquet_file
from fer_utils.predict.predictor import PredictorOptions
from fer_utils.predict.video import DEFAULT_SMOOTHING, DETECT_INTERVAL


@dataclass(frozen=True)
class WorkerSpec:
    """What each worker's Predictor and analysis are: the same values as ``--engine local``'s
    (the Predictor's one :class:`PredictorOptions`, one ONNX Runtime thread per worker; a video's
    analysis; photos' ``detect``)."""

    predictor: PredictorOptions = field(default_factory=lambda: PredictorOptions(threads=1))
    smooth: float = DEFAULT_SMOOTHING
    detect_size: int = VIDEO_MAX_SIDE
    detect_interval: float = DETECT_INTERVAL
    selection: tuple[int, float | None, float, float | None] = (1, None, 0.0, None)
    detect: bool | None = None


@dataclass
class EngineReport:
    """What a Ray run did: inputs done now, rows written, and the inputs that failed, with why."""

    done: int = 0
    rows: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    workers: int = 0
    lost: int = 0
    """Workers that died during the run (their tasks went to the others)."""
    resumed: list[str] = field(default_factory=list)
    """Inputs an earlier run into the folder had done (same model and options): left out."""
    changed: list[str] = field(default_factory=list)
    """Inputs changed since an earlier run: their old rows removed, analysed again."""


class _Worker:
    """One Ray actor: a Predictor loaded once, then video files or photo batches to Parquet files."""

    def __init__(self, spec: WorkerSpec, folder: str) -> None:
        import cv2

        cv2.setNumThreads(1)  # a worker is one CPU: OpenCV's own thread pool would only spin beside the others
        self.spec, self.folder = spec, folder
        self.predictor = spec.predictor.build()

    def pid(self) -> int:
        return os.getpid()

    def video(self, source: str, part: tuple[int, int, float, float | None] | None = None) -> dict[str, Any]:
        """One video, or its part ``(k, n, start, until)`` (seconds): part k's track ids start at
        ``k * PART_TRACK_IDS``, so ids stay unique in the video."""
        from fer_utils.predict.frames import FrameSelection
        from fer_utils.predict.timeline import csv_columns
        from fer_utils.predict.video import analyze_video

        every, fps, start, end = self.spec.selection
        k, until = (part[0], part[3]) if part else (0, None)
        selection = FrameSelection(every, fps, part[2] if part else start, end)
        analyzer = self.predictor.video_analyzer(self.spec.smooth, self.spec.detect_size, self.spec.detect_interval)
        try:
            rows = [row for r in analyze_video(analyzer, source, selection, until=until) for row in r.rows()]
        except FERDataError as err:
            where = f" (part {k + 1} of {part[1]}, from {part[2]:g} s)" if part else ""
            return {"sources": [source], "error": err.reason + where}
        for row in rows:
            row["track"] += k * PART_TRACK_IDS
        hint = Path(source).stem + (f"-part{k:05d}" if part else "")
        name, sha = write_parquet_file(self.folder, [source], rows, hint, csv_columns(self.predictor.classes))
        return {"sources": [source], "file": name, "sha256": sha, "rows": len(rows), "part": part[:2] if part else None}

    def photos(self, sources: list[str], index: int) -> dict[str, Any]:
        from fer_utils.faces.results import photo_output_columns, prediction_rows

        results, skipped = self.predictor.predict_images(sources, detect=self.spec.detect)
        rows = prediction_rows(results, skipped)
        columns = photo_output_columns(self.predictor.classes)
        name, sha = write_parquet_file(self.folder, sources, rows, f"photos-{index}", columns)
        return {"sources": sources, "file": name, "sha256": sha, "rows": len(rows)}


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise FERConfigError(f"--engine ray needs Ray: {install_hint('scale')}") from None
    return ray


MIN_PART_SECONDS = 3.0
"""The shortest part ``--chunk-minutes`` may ask for (0.05 minutes): shorter parts cost more in
opening, seeking and new tracks than they save, and a tiny value would plan millions of them."""
MAX_CHUNK_MINUTES = 100_000.0
"""The longest part (about ten weeks): any finite value above the longest video means whole videos."""


def check_chunk_minutes(minutes: float | None) -> None:
    """Refuse, before any work, a ``--chunk-minutes`` that is not a part length to plan with."""
    if minutes is None:
        return
    if not (math.isfinite(minutes) and MIN_PART_SECONDS / 60 <= minutes <= MAX_CHUNK_MINUTES):
        raise FERConfigError(
            f"--chunk-minutes must be between {MIN_PART_SECONDS / 60:g} (parts of {MIN_PART_SECONDS:g} s) and "
            f"{MAX_CHUNK_MINUTES:g} minutes, got {minutes}"
        )


_ADDRESS = re.compile(r"(?:ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})")


def check_ray_address(address: str | None, timeout: float = 30.0) -> None:
    """Refuse a malformed ``--ray-address``, or one where nothing answers within ``timeout`` seconds,
    before ``ray.init`` (which would print warnings and wait without end)."""
    if not (timeout > 0 and math.isfinite(timeout)):
        raise FERConfigError(f"--ray-timeout must be a positive number of seconds, got {timeout}")
    if address is None or address in ("auto", "local"):
        return
    match = _ADDRESS.fullmatch(address)
    if match is None or not 0 < int(match[2]) < 65536:
        raise FERConfigError(
            f"--ray-address {address!r}: give HOST:PORT of a running cluster (e.g. 10.0.0.5:6379 after "
            "`ray start --head` there), ray://HOST:10001, or auto"
        )
    try:
        with socket.create_connection((match[1].strip("[]"), int(match[2])), timeout=timeout):
            pass
    except OSError as err:
        raise FERConfigError(
            f"--ray-address {address}: no Ray cluster answered within {timeout:g} s ({err.strerror or err}); "
            "check the address and that `ray start --head` runs there, or leave --ray-address out for a Ray on "
            "this machine"
        ) from None


PART_TRACK_IDS = 1_000_000
"""A video analysed in parts (``--chunk-minutes``): part k's track ids start at k times this, so
ids stay unique within the video. A track never crosses a part's border: a person on screen at a
border continues under a new id, and their smoothing starts again there."""


def _video_tasks(sources: Sequence[str], spec: WorkerSpec, parquet: ParquetRun) -> list[tuple]:
    """One task per video, or, with ``parquet.part_seconds``, one per part of a longer video (the
    parts already done skipped): ``(source, None)`` or ``(source, (k, n, start, until))``."""
    from fer_utils.predict.frames import open_video

    tasks: list[tuple] = []
    every, fps = spec.selection[0], spec.selection[1]
    for source in map(str, sources):
        duration = rate = None
        if parquet.part_seconds:
            try:
                capture, info = open_video(source)
                capture.release()
                duration, rate = info.duration, info.fps
            except FERDataError:
                pass  # the worker says why, as for any video
        start, end = spec.selection[2], spec.selection[3]
        stop = min(end, duration) if end is not None and duration else (end or duration)
        if not parquet.part_seconds or stop is None or stop - start <= parquet.part_seconds:
            tasks.append((source, None))
            continue
        analysed_per_second = fps if fps is not None else (rate or 0) / every
        if analysed_per_second and parquet.part_seconds * analysed_per_second < 1:
            raise FERConfigError(
                f"{source}: parts of {parquet.part_seconds:g} s would hold no analysed frame "
                f"({analysed_per_second:g} per second); give a larger --chunk-minutes"
            )
        edges = [start + k * parquet.part_seconds for k in range(math.ceil((stop - start) / parquet.part_seconds))]
        bounds = [(a, b) for a, b in zip(edges, [*edges[1:], None], strict=True)]
        n = len(bounds)
        tasks += [(source, (k, n, a, b)) for k, (a, b) in enumerate(bounds) if not parquet.is_done(source, (k, n))]
    return tasks


MAX_ATTEMPTS = 3
"""A task whose worker dies this many times fails its inputs instead of going round again (an
input that crashes the decoder would otherwise take down one worker after another)."""


def _inputs(kind: str, task: tuple) -> list[str]:
    return [task[0]] if kind == "video" else list(task[0])


def _results(
    ray: Any, start_worker: Callable[[], Any], count: int, kind: str, tasks: list[tuple], report: EngineReport
) -> Iterator[tuple[dict[str, Any], list[Any]]]:
    """Each task's result as it arrives, with the workers then (busy first). ``count`` workers; a
    task goes only to a worker that has answered, so none waits on a worker that cannot start.
    When a worker dies (its process killed, its node lost), its task goes back to the queue for
    the others and a replacement is started, which joins once it answers, wherever the cluster
    finds it a CPU. A task that raises in its worker fails its inputs alone, with the reason."""
    queue, ready, deaths = deque(tasks), [], Counter()
    waiting: dict[Any, tuple[Any, tuple | None]] = {}  # reference -> (worker, its task; None: its hello)
    for _ in range(count):
        worker = start_worker()
        waiting[worker.pid.remote()] = (worker, None)
    while queue or any(task is not None for _, task in waiting.values()):
        while queue and ready:
            worker, task = ready.pop(), queue.popleft()
            waiting[getattr(worker, kind).remote(*task)] = (worker, task)
        [reference], _ = ray.wait(list(waiting), num_returns=1)
        worker, task = waiting.pop(reference)
        try:
            result = ray.get(reference)
        except ray.exceptions.RayActorError:  # the worker is gone: its task to another, and a new worker
            replacement, report.lost = start_worker(), report.lost + 1
            waiting[replacement.pid.remote()] = (replacement, None)
            if task is None:
                continue
            deaths[task] += 1
            if deaths[task] < MAX_ATTEMPTS:
                queue.appendleft(task)
                continue
            result = {"sources": _inputs(kind, task), "error": f"its worker died {MAX_ATTEMPTS} times on it"}
        except ray.exceptions.RayTaskError as err:  # this task's inputs fail; the worker carries on
            cause = err.cause if err.cause is not None else err
            result = {"sources": _inputs(kind, task), "error": f"cannot process ({type(cause).__name__}: {cause})"}
            ready.append(worker)
        else:
            ready.append(worker)
        if task is not None:
            busy = [w for w, t in waiting.values() if t is not None]
            yield result, busy + ready + [w for w, t in waiting.values() if t is None]


def run_on_ray(
    kind: str,
    sources: Sequence[str],
    spec: WorkerSpec,
    parquet: ParquetRun,
    address: str | None = None,
    workers: int | None = None,
    progress: bool = False,
    on_result: Callable[[dict[str, Any], list[Any]], None] | None = None,
    timeout: float = 30.0,
) -> EngineReport:
    """Analyse ``sources`` (``kind``: ``video`` files, or ``photos``) on Ray into ``parquet``, those
    an earlier run did left out (``report.resumed``) as the local jobs do, ``workers`` actors (default: one per CPU of the cluster, and no more). ``on_result(result,
    actors)`` runs as each task's result arrives (progress, or a test that kills a worker).
    ``timeout``: seconds to wait for the cluster at ``address`` before giving up in one line."""
    from tqdm.auto import tqdm

    if kind not in ("video", "photos"):
        raise FERConfigError(f"kind must be 'video' or 'photos', got {kind!r}")
    if workers is not None and workers < 1:
        raise FERConfigError(f"--workers must be 1 or more, got {workers}")
    ray = _ray()
    report = EngineReport()
    todo, report.resumed, report.changed = parquet.plan(sources)
    if kind == "video":  # planned before Ray starts: a part length that cannot work fails first
        tasks = _video_tasks(todo, spec, parquet)
    else:
        tasks = [(list(map(str, todo[i : i + PHOTOS_PER_FILE])), i // PHOTOS_PER_FILE)
                 for i in range(0, len(todo), PHOTOS_PER_FILE)]  # fmt: skip
    if not tasks:
        return report
    started_here = not ray.is_initialized()
    if started_here:
        check_ray_address(address, timeout)
        # "local": a Ray of our own, never a stale cluster record in /tmp/ray that Ray would try to join
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, configure_logging=False)
        restore_stop_handlers()  # ray.init replaces the SIGTERM handler: a stop still ends as every fer stop does
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        if workers is not None and workers > cpus:
            raise FERConfigError(
                f"--workers {workers}: the Ray cluster has {cpus} CPUs and each worker takes one; give at most {cpus}"
            )
        count = min(len(tasks), workers or cpus)
        actor = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(_Worker)  # replaced by _results
        report.workers = count
        results = _results(ray, lambda: actor.remote(spec, str(parquet.folder)), count, kind, tasks, report)
        for result, actors in tqdm(results, total=len(tasks), desc=f"{kind} on Ray", disable=not progress):
            if "file" in result:
                parquet.record(result["sources"], result["file"], result["sha256"], result.get("part"))
                report.done += sum(map(parquet.is_done, result["sources"]))  # a video in parts: with its last part
                report.rows += result["rows"]
            else:
                report.failed += [(s, result["error"]) for s in result["sources"]]
            if on_result is not None:
                on_result(result, actors)
        return report
    finally:
        if started_here:
            ray.shutdown()
