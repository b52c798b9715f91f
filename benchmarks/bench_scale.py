"""Collections: the local engine against Ray with 1 and 2 workers, on videos and photos this
script writes (prints figures; asserts nothing).

    python benchmarks/bench_scale.py [--checkpoint FILE ...] [--videos 4] [--seconds 10] [--photos 256]

Videos: 1280x720, two faces drifting (as benchmarks/bench_video.py writes them), every frame
analysed. Each engine runs as ``fer video DIR --parquet OUT`` (``--engine ray --workers K``) in a
fresh process, with the ONNX export already cached. Printed per case: wall time, analysed frames
per second, frames per second per busy core, the peak RSS of one Ray worker, and core-seconds
per minute of video (CPU time of the command and its workers, from /proc). Photos: 640x480 with
one face, ``fer predict DIR --parquet OUT``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from bench_video import FPS, write_video

TICKS = os.sysconf("SC_CLK_TCK")


def descendants_cpu_and_rss(root: int) -> tuple[float, dict[int, float]]:
    """CPU seconds of ``root``'s live process tree (and of ``ray::`` workers anywhere: Ray starts
    them from its own daemon) and each Ray worker's RSS in MB."""
    cpu, worker_rss = 0.0, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid, utime, stime = int(stat[1]), int(stat[11]), int(stat[12])
        if int(entry.name) == root or ppid == root or "ray::" in cmdline:
            cpu += (utime + stime) / TICKS
        if "ray::_Worker" in cmdline:
            rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), 0)
            worker_rss[int(entry.name)] = rss / 1024
    return cpu, worker_rss


def timed(command: list[str]) -> dict[str, float]:
    """Run ``command``; its wall time, the CPU seconds of it and its workers (sampled), the peak RSS of a worker."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cpu, peak = [0.0], [0.0]
    seen: dict[int, float] = {}

    def sample() -> None:
        while process.poll() is None:
            now, rss = descendants_cpu_and_rss(process.pid)
            cpu[0] = max(cpu[0], now)
            for pid, mb in rss.items():
                seen[pid] = max(seen.get(pid, 0.0), mb)
            time.sleep(0.25)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _, err = process.communicate()
    watcher.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err[-2000:]}")
    peak[0] = max(seen.values(), default=float("nan"))
    return {"wall": time.perf_counter() - started, "cpu": cpu[0], "worker_peak_mb": peak[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", nargs="+", default=None)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--photos", type=int, default=256)
    args = parser.parse_args()
    fer = [sys.executable, "-m", "fer_utils.cli"]
    model = ["--checkpoint", *args.checkpoint] if args.checkpoint else []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        videos = root / "videos"
        videos.mkdir()
        for i in range(args.videos):
            write_video(videos / f"v{i}.mp4", (1280, 720), 2, args.seconds)
        subprocess.run([*fer, "predict", str(root), "--quiet", *model], capture_output=True, check=False)  # warm cache
        frames = round(args.seconds * FPS) * args.videos
        minutes = args.videos * args.seconds / 60
        print(
            f"{args.videos} videos of {args.seconds:g} s at 1280x720, two faces: {frames} frames; {os.cpu_count()} cores"
        )
        for name, extra in [("local", []), ("ray, 1 worker", ["--engine", "ray", "--workers", "1"]),
                            ("ray, 2 workers", ["--engine", "ray", "--workers", "2"])]:  # fmt: skip
            out = root / f"out-{len(extra)}-{extra[-1] if extra else 0}"
            got = timed([*fer, "video", str(videos), "--quiet", "--parquet", str(out), *model, *extra])
            print(
                f"video {name}: {got['wall']:.1f} s wall, {frames / got['wall']:.1f} frames/s, "
                f"{frames / max(got['cpu'], 1e-9):.1f} frames per core-second, {got['cpu'] / minutes:.0f} core-seconds per "
                f"minute of video, worker peak RSS {got['worker_peak_mb']:.0f} MB"
            )
        photos = root / "photos"
        photos.mkdir()
        from PIL import Image

        from fer_utils.course import sample_face

        face = sample_face(160)
        for i in range(args.photos):
            canvas = np.full((480, 640), 80 + i % 100, np.uint8)
            canvas[150:310, 240:400] = face
            Image.fromarray(canvas).save(photos / f"p{i:04d}.jpg")
        for name, extra in [("local", []), ("ray, 2 workers", ["--engine", "ray", "--workers", "2"])]:
            out = root / f"photos-out-{len(extra)}"
            got = timed([*fer, "predict", str(photos), "--quiet", "--parquet", str(out), *model, *extra])
            print(f"photos {name}: {args.photos / got['wall']:.1f} photos/s ({got['wall']:.1f} s wall)")


if __name__ == "__main__":
    main()
