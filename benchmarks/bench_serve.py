"""Gradio app under load: latency of ordinary requests, alone and beside heavy uploads.

Prints figures; asserts nothing. Traffic goes to 127.0.0.1 only, bounded in count.

    python benchmarks/bench_serve.py [--checkpoint FILE] [--requests 20]
    python benchmarks/bench_serve.py --soak 60 --clients 20 [--before REV]

- The cost of one hostile upload: a 16-bit 9400x9400 PNG (about 170 KB on disk) decoded by
  ``open_image`` + ``to_grayscale_array``: wall time and peak memory (tracemalloc sees numpy).
- p50/p95 of N concurrent ordinary requests (different 48 px faces), then the latency of one ordinary
  request sent right after three heavy uploads, for the app's queue settings and for a
  one-at-a-time queue (Gradio's default), in one run.
- ``--soak S --clients N``: N clients send photos (one face each, at different places) for S
  seconds; every answer's boxes are compared with that photo's boxes analysed alone. Prints
  requests, errors, wrong answers, p50/p95 and the server's RSS over time (it runs in this process).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from fer_utils.data import synthetic_faces
from fer_utils.data.images import open_image, to_grayscale_array
from fer_utils.deploy import app
from fer_utils.predict.predictor import Predictor


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def heavy_png(path: Path, side: int = 9400, offset: int = 0) -> Path:
    ramp = (np.linspace(0, 60000, side, dtype=np.float32) + offset).astype(np.uint16)
    Image.fromarray(np.broadcast_to(ramp, (side, side)).copy()).save(path, optimize=True)
    return path


def decode_cost(path: Path) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    gray = to_grayscale_array(open_image(path))
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"hostile upload {path.stat().st_size / 1e3:.0f} KB 16-bit 9400x9400 PNG: decoded to {gray.shape[1]}x"
        f"{gray.shape[0]} in {seconds:.2f} s, numpy peak {peak / 1e6:.0f} MB (Pillow's own 177 MB buffer not counted)"
    )


def timed_call(url: str, photo: str) -> float:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    started = time.perf_counter()
    client.predict(handle_file(photo), False, api_name="/predict")
    return time.perf_counter() - started


def run(predictor: Predictor, concurrency: int, faces: list[str], heavy: list[str]) -> None:
    port = free_port()
    demo = app.build_app(predictor).queue(default_concurrency_limit=concurrency, max_size=app.QUEUE_SIZE)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        n = len(faces) - 1
        timed_call(url, faces[-1])  # warm-up
        with ThreadPoolExecutor(n) as pool:  # different photos, as from different users
            seconds = sorted(pool.map(lambda photo: timed_call(url, photo), faces[:n]))
        p50, p95 = np.percentile(seconds, [50, 95])
        with ThreadPoolExecutor(4) as pool:
            heavies = [pool.submit(timed_call, url, photo) for photo in heavy]  # three different users' photos
            time.sleep(0.3)  # the heavy uploads are in the queue first
            ordinary = pool.submit(timed_call, url, faces[-1]).result()
            heavy_s = [f.result() for f in heavies]
        print(
            f"concurrency {concurrency}: {n} concurrent ordinary requests p50 {p50:.2f} s, p95 {p95:.2f} s, "
            f"0 failures; one ordinary request behind 3 heavy uploads: {ordinary:.2f} s "
            f"(heavy ones {min(heavy_s):.1f}-{max(heavy_s):.1f} s)"
        )
    finally:
        demo.close()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def face_photos(folder: Path, n: int) -> list[Path]:
    """640x480 photos with one detectable synthetic face each, at different places."""
    import cv2

    face = cv2.resize(synthetic_faces(4, seed=5).images[1], (160, 160), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        canvas = np.full((480, 640), 110, np.uint8)
        x, y = int(rng.integers(0, 480)), int(rng.integers(0, 320))
        canvas[y : y + 160, x : x + 160] = face
        paths.append(folder / f"photo{i}.png")
        Image.fromarray(canvas).save(paths[-1])
    return paths


def soak(predictor: Predictor, seconds: float, clients: int, photos: list[Path]) -> None:
    from gradio_client import Client, handle_file

    expected = {str(p): [(f.box.x, f.box.y) for f in predictor.predict_image(p).faces] for p in photos}
    port = free_port()
    queue = getattr(app, "QUEUE_SIZE", None)  # older versions (bench --before) had no bound
    demo = app.build_app(predictor).queue(default_concurrency_limit=app.CONCURRENCY, max_size=queue)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    latencies: list[float] = []
    errors: list[str] = []
    wrong: list[str] = []
    rss = [(0.0, rss_mb())]
    started = time.perf_counter()
    stop = started + seconds

    def client_loop(seed: int) -> None:
        client = Client(url, verbose=False)
        rng = np.random.default_rng(seed)
        while time.perf_counter() < stop:
            photo = str(photos[int(rng.integers(len(photos)))])
            t0 = time.perf_counter()
            try:
                _, _, summary, _ = client.predict(handle_file(photo), False, api_name="/predict")
            except Exception as err:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(err).__name__}: {err}"[:120])
                continue
            latencies.append(time.perf_counter() - t0)
            if [(f["box"]["x"], f["box"]["y"]) for f in summary["faces"]] != expected[photo]:
                wrong.append(photo)

    try:
        with ThreadPoolExecutor(clients) as pool:
            futures = [pool.submit(client_loop, i) for i in range(clients)]
            while any(not f.done() for f in futures):
                time.sleep(5)
                rss.append((time.perf_counter() - started, rss_mb()))
    finally:
        demo.close()
    p50, p95 = np.percentile(latencies, [50, 95]) if latencies else (float("nan"), float("nan"))
    print(
        f"soak: {clients} clients for {seconds:.0f} s: {len(latencies) + len(errors)} requests, {len(errors)} errors, "
        f"{len(wrong)} answers with another photo's boxes; p50 {p50:.2f} s, p95 {p95:.2f} s"
    )
    print("server RSS (s: MB): " + ", ".join(f"{t:.0f}: {m:.0f}" for t, m in rss))
    if errors:
        print("first errors: " + "; ".join(errors[:3]))


def soak_revision(revision: str, argv: list[str]) -> None:
    """The same soak against an older commit's fer_utils (same machine, same run), for before/after figures."""
    repo = Path(__file__).resolve().parent.parent
    argv = [a for i, a in enumerate(argv) if a != "--before" and (i == 0 or argv[i - 1] != "--before")]
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "before"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", "--detach", str(tree), revision], check=True)
        try:
            print(f"before ({revision}):", flush=True)
            launch = (  # an editable install's import hook would otherwise serve this checkout's fer_utils
                "import runpy, sys; tree, script = sys.argv[1:3]; sys.argv = sys.argv[2:]; "
                "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in str(getattr(f, '__module__', ''))]; "
                "sys.path.insert(0, tree); runpy.run_path(script, run_name='__main__')"
            )
            done = subprocess.run([sys.executable, "-c", launch, str(tree), __file__, *argv], check=False)
            if done.returncode:
                print(f"before ({revision}): the server process ended with exit code {done.returncode}")
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--soak", type=float, default=0, metavar="SECONDS", help="run the soak test instead")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument(
        "--before", default=None, metavar="REV", help="with --soak: soak this older commit first (a git worktree)"
    )
    args = parser.parse_args()
    if args.before and args.soak:
        soak_revision(args.before, sys.argv[1:])
        print("now:")
    predictor = Predictor.from_checkpoint(args.checkpoint)
    if args.soak:
        with tempfile.TemporaryDirectory() as tmp:
            soak(predictor, args.soak, args.clients, face_photos(Path(tmp), 12))
        return
    with tempfile.TemporaryDirectory() as tmp:
        faces = []
        for i, image in enumerate(synthetic_faces(3, seed=0).images[: args.requests + 1]):
            faces.append(str(Path(tmp) / f"face{i}.png"))
            Image.fromarray(image).save(faces[-1])
        heavy = [heavy_png(Path(tmp) / f"heavy{i}.png", offset=i * 1000) for i in range(3)]
        decode_cost(heavy[0])
        for concurrency in (1, app.CONCURRENCY):
            run(predictor, concurrency, faces, [str(p) for p in heavy])


if __name__ == "__main__":
    main()
