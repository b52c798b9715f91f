"""Gradio app under load: latency of ordinary requests, alone and beside heavy uploads.

Prints figures; asserts nothing. Traffic goes to 127.0.0.1 only, bounded in count.

    python benchmarks/bench_serve.py [--checkpoint FILE] [--requests 20]

- The cost of one hostile upload: a 16-bit 9400x9400 PNG (about 170 KB on disk) decoded by
  ``open_image`` + ``to_grayscale_array``: wall time and peak memory (tracemalloc sees numpy).
- p50/p95 of N concurrent ordinary requests (different 48 px faces), then the latency of one ordinary
  request sent right after three heavy uploads, for the app's queue settings and for a
  one-at-a-time queue (Gradio's default), in one run.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from fer_utils import app
from fer_utils.data import synthetic_faces
from fer_utils.data.images import open_image, to_grayscale_array
from fer_utils.inference import Predictor


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    predictor = Predictor.from_checkpoint(args.checkpoint)
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
