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
import importlib.util
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "web"


def classify_times(site: Path, face: Path, repeats: int) -> list[float]:
    """Upload ``face`` ``repeats`` + 1 times to the demo served from ``site`` and return the page's
    own classification time (ms) of each: the first includes ONNX Runtime Web's first-run set-up,
    what a visitor waits for on their first photo. Serves and drives the page with the browser
    tests' own helpers (tests/test_deployment.py), so both see the same page."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_deployment import in_browser, serve_folder

    def upload_repeatedly(page) -> list[float]:
        times = []
        for i in range(repeats + 1):
            copy = face.with_name(f"face{i}.png")  # a new name: the input fires a change each time
            shutil.copyfile(face, copy)
            page.evaluate("window.ferResult = null")
            page.set_input_files("#file", str(copy))
            page.wait_for_function("window.ferResult !== null", timeout=120_000)
            times.append(page.evaluate("window.ferResult.classify_ms"))
        return times

    server, url = serve_folder(site)
    try:
        return in_browser(url, upload_repeatedly)
    finally:
        server.shutdown()


def main() -> None:
    from fer_utils.data import load_dataset
    from fer_utils.model.export import build_web_demo
    from fer_utils.predict.predictor import (
        REPO_MODELS_DIR,
        SHIPPED_FAST_MODEL,
        SHIPPED_PHOTO_MODEL,
        SHIPPED_SINGLE_MODEL,
    )

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="*", type=Path)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--data", default=None, help="FER2013 folder: time a real PublicTest face (default: random)")
    args = parser.parse_args()
    runtime = WEB / "node_modules" / "onnxruntime-web" / "dist"
    if (
        (shutil.which("chromium") or shutil.which("chromium-browser")) is None
        or not runtime.is_dir()
        or importlib.util.find_spec("playwright") is None
    ):
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
            first, *times = classify_times(site, face, args.repeats)
        print(
            f"{checkpoint.name}: model.onnx {result.size_bytes / 1e6:.1f} MB; classification per face: first "
            f"{first:.0f} ms, then median of {len(times)} {statistics.median(times):.0f} ms "
            f"(min {min(times):.0f}, max {max(times):.0f})"
        )


if __name__ == "__main__":
    main()
