"""Deployment: the static demo in a real headless Chromium must agree with the Python predictor,
and the Gradio app must answer through its client API. Both run on loopback only."""

import functools
import http.server
import shutil
import socket
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from conftest import CHROMIUM, CHROMIUM_FLAGS, face_photo
from fer_utils.model.export import build_web_demo
from fer_utils.predict.predictor import REPO_MODELS_DIR, SHIPPED_WEB_MODEL, Predictor

WEB = Path(__file__).parent.parent / "web"


@pytest.fixture(scope="module")
def checkpoint(untrained_checkpoint):
    """The model `make web` puts in the browser demo: the photo model (the FER+ ensemble)."""
    shipped = REPO_MODELS_DIR / SHIPPED_WEB_MODEL
    return shipped if shipped.is_file() else untrained_checkpoint


@pytest.fixture(scope="module")
def site_folder(tmp_path_factory, checkpoint) -> Path:
    runtime = WEB / "node_modules" / "onnxruntime-web" / "dist"
    if not runtime.is_dir():
        pytest.skip("onnxruntime-web not installed: run `npm ci` in web/ (CI does)")
    folder = tmp_path_factory.mktemp("site")
    for name in ("index.html", "app.js", "style.css"):
        shutil.copyfile(WEB / name, folder / name)
    build_web_demo(folder, checkpoint, runtime_dir=runtime)
    return folder


def serve_folder(folder: Path):
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.fixture(scope="module")
def site(site_folder):
    server, url = serve_folder(site_folder)
    yield url
    server.shutdown()


def test_web_export_defaults_to_the_photo_model(tmp_path, monkeypatch, small_faces):
    """`fer export --format web` (what `make web` runs) with no --checkpoint builds the demo on the
    photo model, so a photo gets the same probabilities in the browser as from `fer predict`."""
    from fer_utils.cli import main

    runtime = WEB / "node_modules"
    if not (runtime / "onnxruntime-web" / "dist").is_dir():
        pytest.skip("onnxruntime-web not installed: run `npm ci` in web/ (CI does)")
    if not (REPO_MODELS_DIR / SHIPPED_WEB_MODEL).is_file():
        pytest.skip("the shipped photo model is not in models/")
    monkeypatch.delenv("FER_CHECKPOINT", raising=False)
    site = tmp_path / "site"
    site.mkdir()
    shutil.copyfile(WEB / "index.html", site / "index.html")
    (site / "node_modules").symlink_to(runtime, target_is_directory=True)
    assert main(["export", "--format", "web", "--out", str(site)]) == 0
    face = tmp_path / "face.png"
    Image.fromarray(small_faces.images[3]).save(face)
    in_browser_model = Predictor.from_checkpoint(site / "model.onnx").predict_image(face).faces[0]
    photo_default = Predictor.from_checkpoint().predict_image(face).faces[0]
    assert in_browser_model.label == photo_default.label
    assert in_browser_model.probabilities == pytest.approx(photo_default.probabilities, abs=1e-4)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_class_names_from_model_json_are_text_and_a_non_image_clears_the_result(site_folder, tmp_path):
    import json

    hostile = tmp_path / "site"
    shutil.copytree(site_folder, hostile)
    meta = json.loads((hostile / "model.json").read_text())
    meta["classes"] = [f'<img src=x onerror="window.pwned=1">{c}' for c in meta["classes"]]
    (hostile / "model.json").write_text(json.dumps(meta))
    photo = tmp_path / "face.png"
    Image.fromarray(face_photo()).save(photo)
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is not a picture")
    server, url = serve_folder(hostile)

    def act(page):
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("body[data-status=done]", timeout=60_000)
        shown = page.inner_text("#bars")
        injected = page.evaluate("document.querySelectorAll('#bars img, #faces img').length")
        page.set_input_files("#file", str(not_image))
        page.wait_for_selector("body[data-status=error]", timeout=30_000)
        status = page.inner_text("#status")
        return (
            shown,
            injected,
            page.evaluate("window.pwned"),
            page.inner_text("#label"),
            page.inner_text("#bars"),
            status,
        )

    try:
        shown, injected, pwned, label, bars_after, status = in_browser(url, act)
    finally:
        server.shutdown()
    assert "<img" in shown and injected == 0 and pwned is None  # the name is shown as text, no script ran
    assert "notes.jpg is not an image" in label and bars_after == ""  # the old result is gone
    assert "notes.jpg is not an image" in status  # the status line says so too, not "models ready"


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_a_model_json_that_would_not_load_in_python_does_not_load_in_the_browser(site_folder, tmp_path):
    import json

    problems = {"std": [0, 0, 0], "classes": ["happy"] * 7, "image_size": 12000}
    seen = {}
    for key, value in problems.items():
        edited = tmp_path / key
        shutil.copytree(site_folder, edited)
        meta = json.loads((edited / "model.json").read_text())
        (edited / "model.json").write_text(json.dumps({**meta, key: value}))
        server, url = serve_folder(edited)
        try:
            seen[key] = in_browser(url, lambda page: page.inner_text("#status"), status="error")
        finally:
            server.shutdown()
    assert "model.json says std" in seen["std"] and "model.json repeats a class name" in seen["classes"]
    assert "model.json says image_size 12000" in seen["image_size"]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".onnx": "application/octet-stream",
    }

    def log_message(self, *args):
        pass


def in_browser(url: str, action, extra_args: tuple[str, ...] = (), status: str = "ready"):
    """Open ``url`` in headless Chromium, wait for the models (``status``: the page's state to wait
    for), run ``action(page)`` and return its value."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, *extra_args])
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector(f"body[data-status={status}]", timeout=60_000)
            return action(page)
        finally:
            browser.close()


def browser_result(url: str, image: Path) -> dict:
    def upload(page):
        page.set_input_files("#file", str(image))
        page.wait_for_selector("body[data-status=done]", timeout=60_000)
        return page.evaluate("window.ferResult")

    return in_browser(url, upload)


def iou(a: dict, b) -> float:
    ix = max(0.0, min(a["x"] + a["w"], b.x + b.w) - max(a["x"], b.x))
    iy = max(0.0, min(a["y"] + a["h"], b.y + b.h) - max(a["y"], b.y))
    return ix * iy / (a["w"] * a["h"] + b.w * b.h - ix * iy)


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (CI installs it)")


@needs_chromium
def test_browser_demo_matches_the_python_predictor_on_face_crops(site, checkpoint, tmp_path, small_faces):
    pytest.importorskip("playwright")
    predictor = Predictor.from_checkpoint(checkpoint)
    for i in (0, 5):
        path = tmp_path / f"face{i}.png"
        Image.fromarray(small_faces.images[i]).save(path)
        page = browser_result(site, path)
        expected = predictor.predict_image(path).faces[0]
        assert not page["detected"] and len(page["faces"]) == 1
        assert page["label"] == expected.label
        assert page["probabilities"] == pytest.approx(expected.probabilities, abs=1e-3)
        print(
            f"in-browser inference, first face of a page (ONNX Runtime Web's set-up included): {page['classify_ms']:.1f} ms"
        )


@needs_chromium
def test_browser_finds_the_same_faces_with_the_same_labels_as_python(site, checkpoint, tmp_path):
    pytest.importorskip("playwright")
    path = tmp_path / "group.png"
    Image.fromarray(face_photo([(60, 100), (400, 200)])).save(path)
    expected = Predictor.from_checkpoint(checkpoint).predict_image(path).faces
    page = browser_result(site, path)
    assert page["detected"] and len(page["faces"]) == len(expected) == 2
    for want in expected:
        face = max(page["faces"], key=lambda f, w=want: iou(f, w.box))
        assert iou(face, want.box) >= 0.8
        assert face["label"] == want.label
        assert len(face["landmarks"]) == 5
    print(f"in-browser photo: {page['detect_ms']:.0f} ms detection, {page['classify_ms']:.0f} ms classification")


def y4m_video(path: Path, frame: np.ndarray, frames: int = 10) -> Path:
    """A gray clip in the YUV4MPEG2 format Chromium's fake camera plays (4:2:0, neutral chroma)."""
    height, width = frame.shape
    chroma = np.full((height // 2) * (width // 2), 128, np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + frame.tobytes() + chroma + chroma)
    return path


@needs_chromium
def test_browser_camera_labels_faces_live(site, tmp_path):
    pytest.importorskip("playwright")
    video = y4m_video(tmp_path / "camera.y4m", face_photo([(60, 100), (400, 200)]))

    def film(page):
        page.click("#camera")
        page.wait_for_function("window.ferLive && window.ferLive.frames >= 3", timeout=60_000)
        return {**page.evaluate("window.ferLive"), "chips": page.inner_text("#faces")}

    fake_camera = (
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    )
    live = in_browser(site, film, fake_camera)
    assert live["fps"] > 0 and live["faces"]  # the camera's colour conversion may cost a cartoon face
    for face in live["faces"]:
        assert face["label"] in ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
        assert face["label"] in live["chips"]
        cx, cy = face["x"] + face["w"] / 2, face["y"] + face["h"] / 2
        assert any(x < cx < x + 160 and y < cy < y + 160 for x, y in ((60, 100), (400, 200)))  # on a pasted face
    print(f"in-browser camera: {live['fps']:.1f} frames per second")


@pytest.fixture(scope="module")
def gradio_url(checkpoint):
    pytest.importorskip("gradio")
    from fer_utils.deploy.app import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_app(Predictor.from_checkpoint(checkpoint))
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, max_file_size="10mb")
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_gradio_app_answers_through_its_client(gradio_url, tmp_path):
    from gradio_client import Client, handle_file

    from conftest import face_photo

    photo = tmp_path / "two.png"
    Image.fromarray(face_photo([(60, 100), (400, 200)])).save(photo)
    client = Client(gradio_url, verbose=False)
    annotated, label, faces, cams = client.predict(handle_file(str(photo)), True, api_name="/predict")
    assert len(faces["faces"]) == 2 and faces["reason"] is None
    assert label["label"] == faces["faces"][0]["label"]
    assert len(cams) == 2 and Path(annotated).is_file()
    assert np.isclose(sum(faces["faces"][0]["probabilities"].values()), 1.0, atol=1e-4)


def test_gradio_video_tab_gives_timeline_tracks_and_csv(gradio_url, tmp_path):
    from gradio_client import Client, handle_file

    from conftest import write_face_video

    video = write_face_video(tmp_path / "clip.mp4", lambda i: [(20 + i, 20), (200, 120 - i)], n_frames=30)
    client = Client(gradio_url, verbose=False)
    timeline, tracks, rows = client.predict(handle_file(str(video)), 0.5, api_name="/video")
    assert [row[0] for row in tracks["data"]] == [0, 1]  # two people, one row each
    lines = Path(rows).read_text().splitlines()
    frames = tracks["headers"].index("frames")
    assert lines[0].startswith("file,frame,time_s,track") and len(lines) - 1 == sum(r[frames] for r in tracks["data"])
    assert len(lines) > 45  # 2 faces in 30 frames, a few missed
    assert Path(timeline).stat().st_size > 10_000
