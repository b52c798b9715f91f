"""In-browser benchmark: what the static demo (web/) costs a visitor for a given checkpoint.
Builds the site for each checkpoint in a temporary folder, serves it on 127.0.0.1, uploads the
same 48x48 face N times in headless Chromium and prints the model's download size and the
median classification time per face (ONNX Runtime Web, 1 wasm thread, as the demo runs).

    python benchmarks/bench_web.py [--repeats 10] [CHECKPOINT ...]

Default: the single model the demo ships, the fast file and the FER+ ensemble. Needs Debian's
chromium, Playwright (dev requirements) and `npm ci` in web/ (as the browser tests do).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import importlib.util
import shutil
import statistics
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "web"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {  # noqa: RUF012 - the base class's own attribute, extended
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".onnx": "application/octet-stream",
    }

    def log_message(self, *args) -> None:
        pass


def classify_times(site: Path, face: Path, repeats: int, chromium: str) -> list[float]:
    """Upload ``face`` ``repeats`` + 1 times to the demo served from ``site`` and return the page's
    own classification time (ms) of each: the first includes ONNX Runtime Web's first-run set-up,
    what a visitor waits for on their first photo."""
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import CHROMIUM_FLAGS

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    times = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            page.wait_for_selector("body[data-status=ready]", timeout=120_000)
            for i in range(repeats + 1):
                copy = face.with_name(f"face{i}.png")  # a new name: the input fires a change each time
                shutil.copyfile(face, copy)
                page.evaluate("window.ferResult = null")
                page.set_input_files("#file", str(copy))
                page.wait_for_function("window.ferResult !== null", timeout=120_000)
                times.append(page.evaluate("window.ferResult.classify_ms"))
            browser.close()
    finally:
        server.shutdown()
    return times


def main() -> None:
    from fer_utils.data import load_dataset
    from fer_utils.export import build_web_demo
    from fer_utils.inference import REPO_MODELS_DIR, SHIPPED_FAST_MODEL, SHIPPED_PHOTO_MODEL, SHIPPED_SINGLE_MODEL

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="*", type=Path)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--data", default=None, help="FER2013 folder: time a real PublicTest face (default: random)")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    runtime = WEB / "node_modules" / "onnxruntime-web" / "dist"
    if chromium is None or not runtime.is_dir() or importlib.util.find_spec("playwright") is None:
        sys.exit(
            "needs Debian's chromium (apt-get install chromium), Playwright (pip install -r requirements-dev.txt) "
            "and onnxruntime-web (`npm ci` in web/)"
        )
    checkpoints = args.checkpoints or [
        REPO_MODELS_DIR / SHIPPED_SINGLE_MODEL,
        REPO_MODELS_DIR / SHIPPED_FAST_MODEL,
        REPO_MODELS_DIR / SHIPPED_PHOTO_MODEL,
    ]
    if args.data:
        pixels = load_dataset(args.data, progress=False).splits["val"].images[0]
    else:
        pixels = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    for checkpoint in checkpoints:
        with tempfile.TemporaryDirectory() as work:
            site = Path(work) / "site"
            site.mkdir()
            for name in ("index.html", "app.js", "style.css"):
                shutil.copyfile(WEB / name, site / name)
            result = build_web_demo(site, checkpoint, runtime_dir=runtime)
            face = Path(work) / "face.png"
            Image.fromarray(pixels).save(face)
            first, *times = classify_times(site, face, args.repeats, chromium)
        print(
            f"{checkpoint.name}: model.onnx {result.size_bytes / 1e6:.1f} MB; classification per face: first "
            f"{first:.0f} ms, then median of {len(times)} {statistics.median(times):.0f} ms "
            f"(min {min(times):.0f}, max {max(times):.0f})"
        )


if __name__ == "__main__":
    main()
