"""A small Gradio web app: upload a photo or use the webcam; see every face's expression,
all probabilities and, optionally, Grad-CAM; follow faces live from the camera; or upload a
video for each person's expressions over time.

    fer serve [--checkpoint FILE] [--host 127.0.0.1] [--port 7860] [--share]

In Colab, ``--share`` (or ``build_app(predictor).launch(share=True)``) prints a public link.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from fer_utils.core.errors import FERConfigError, FERDataError, FERError, install_hint
from fer_utils.data.images import check_pixels
from fer_utils.predict.predictor import Predictor
from fer_utils.predict.video import DEFAULT_SMOOTHING, FrameAnalyzer

MAX_FILE_SIZE = "10mb"
"""Uploads above this are refused by Gradio before they reach the model."""

CONCURRENCY = 4
"""Requests analysed at once; PyTorch releases the GIL, so a huge photo does not block small ones."""

QUEUE_SIZE = 64
"""Requests waiting beyond this are refused at once ("queue full") rather than left hanging."""

DELETE_CACHE = (600, 1800)
"""Gradio's ``delete_cache`` (every, older than; seconds): uploads and annotated copies live at
most about 40 minutes on the server, then are deleted."""

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def require_gradio() -> None:
    """Fail in one line, naming the install, where the app's library is missing."""
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise FERConfigError(f"the web app needs gradio, which this install lacks: {install_hint('app')}")


def upload_folder() -> Path:
    """Where Gradio stores what clients upload (``GRADIO_TEMP_DIR``, else the system temp folder)."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def uploaded_file(path: str) -> Path:
    """``path`` if it is a file a client uploaded to this app; FERDataError for any other server path,
    so a request can never make the app read (and send back) a file it was not sent."""
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(upload_folder()) or not resolved.is_file():
        raise FERDataError(f"{path}: not an uploaded file; the app analyses uploads only")
    return resolved


def public_reason(err: FERError) -> str:
    """What went wrong, for a client: the reason with this server's folders taken out of it
    (an upload is named by its file name only), so no message shows where the server keeps files."""
    text = getattr(err, "reason", None) or str(err)
    for folder in {str(upload_folder()), tempfile.gettempdir(), os.path.realpath(tempfile.gettempdir()), os.getcwd()}:
        text = re.sub(re.escape(folder.rstrip(os.sep)) + r"[^\s:;,'\"]*" + re.escape(os.sep), "", text)
    return text


def exposure_warning(host: str, share: bool) -> str | None:
    """One line saying who can reach the app when it is served beyond this machine, else None."""
    if share:
        return (
            "warning: --share makes a public gradio.live link: anyone who has it can upload photos "
            "to this machine and see the results, until you stop the app"
        )
    if host not in LOOPBACK_HOSTS:
        return (
            f"warning: serving on {host}: anyone who can reach this machine's port can use the app; "
            "use --host 127.0.0.1 to keep it to this machine"
        )
    return None


def _unique(image: Image.Image) -> Image.Image:
    """``image`` with a text chunk naming this response. Gradio stores each output under a name
    derived from its bytes and writes it there non-atomically, so two requests with the same photo
    would write and serve one file at once (the soak saw clients get cut-off downloads); with the
    chunk (kept in PNG outputs) every response's file is its own."""
    image.info["fer-response"] = uuid.uuid4().hex
    return image


def analyze(predictor: Predictor, image_path: str | None, gradcam: bool = False):
    """The app's one endpoint: (annotated photo, first face's probabilities, all faces as JSON,
    Grad-CAM overlays)."""
    import gradio as gr

    from fer_utils.faces.drawing import annotate_image

    if not image_path:
        raise gr.Error("Upload a photo or take one with the webcam first.")
    try:
        image_path = str(uploaded_file(image_path))
        result = predictor.predict_image(image_path)
        annotated = _unique(annotate_image(image_path, result))
    except FERDataError as err:
        raise gr.Error(f"Cannot read this image: {public_reason(err)}") from None
    faces = [{"face": i, **face.to_dict()} for i, face in enumerate(result.faces)]
    summary = {"faces": faces, "reason": result.reason}
    label = result.faces[0].probabilities if result.faces else {}
    overlays = []
    if gradcam and result.faces:
        try:
            from fer_utils.model.gradcam import overlay

            cams = predictor.gradcam([f.face for f in result.faces])
        except ImportError:
            raise gr.Error(
                f"Grad-CAM needs PyTorch, which this server does not have ({install_hint('course')})"
            ) from None
        except FERError as err:
            raise gr.Error(f"Grad-CAM is not available for this model: {public_reason(err)}") from None
        overlays = [
            (_unique(Image.fromarray(np.asarray(overlay(f.face, cam)))), f"face {i}: {f.label}")
            for i, (f, cam) in enumerate(zip(result.faces, cams, strict=True))
        ]
    return annotated, label, summary, overlays


def analyze_video_upload(
    predictor: Predictor, video_path: str | None, smooth: float = DEFAULT_SMOOTHING, progress=None
):
    """The video tab: (timeline plot, per-track summary table, CSV of every face in every frame)
    for an uploaded video, through the same code as ``fer video``. The outputs are written into a
    fresh folder among the uploads, so the sweeper removes them with the upload."""
    import gradio as gr

    from fer_utils.predict.frames import FrameSelection
    from fer_utils.predict.video import analyze_videos

    if not video_path:
        raise gr.Error("Upload a video first.")
    try:
        path = uploaded_file(video_path)
        out = Path(tempfile.mkdtemp(prefix="video-", dir=upload_folder()))
        csv_path, plot_path = out / f"{path.stem}_faces.csv", out / f"{path.stem}_timeline.png"
        report = analyze_videos(
            lambda: predictor.video_analyzer(smooth),
            [str(path)],
            FrameSelection(),
            model=predictor.name,
            csv_path=csv_path,
            plot_path=plot_path,
            progress=progress is not None,
        )
    except FERDataError as err:
        raise gr.Error(f"Cannot read this video: {public_reason(err)}") from None
    if not report.summaries:
        raise gr.Error("No face was found in this video.")
    import pandas as pd  # Gradio's own dependency

    table = pd.DataFrame(
        {
            "track": s.track,
            "from (s)": round(s.start_s, 2),
            "to (s)": round(s.end_s, 2),
            "frames": s.frames,
            "dominant": s.dominant,
            **{c: f"{v:.0%}" for c, v in s.shares.items()},
            "label changes": len(s.changes),
        }
        for s in report.summaries
    )
    return str(plot_path), table, str(csv_path)


def live_frame(predictor: Predictor, frame: np.ndarray | None, analyzer: FrameAnalyzer | None):
    """The live camera tab, one frame of the stream: faces tracked and smoothed across the
    session's frames (its own FrameAnalyzer, kept in the session state), drawn on the frame."""
    import cv2

    from fer_utils.predict.video_outputs import draw_tracks

    if frame is None:
        return None, analyzer
    try:
        check_pixels(frame.shape[1], frame.shape[0], "camera frame")  # a client sends what it likes
    except FERDataError as err:
        import gradio as gr

        raise gr.Error(f"Cannot read this frame: {public_reason(err)}") from None
    if analyzer is None:
        analyzer = predictor.video_analyzer().warm_up()
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    result = analyzer.analyze(gray, time.monotonic())
    drawn = draw_tracks(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), result.faces)
    return cv2.cvtColor(drawn, cv2.COLOR_BGR2RGB), analyzer


def build_app(predictor: Predictor):
    """The Gradio Blocks app around ``predictor`` (not launched): a photo tab, a live camera tab
    (tracked, smoothed labels) and a video tab (timeline, per-track summary, CSV)."""
    require_gradio()
    import gradio as gr

    with gr.Blocks(title="Facial expression recognition", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(
            "# Facial expression recognition\nEvery face is found, cropped and classified into angry, "
            "disgust, fear, happy, neutral, sad or surprise: in a photo, live from your camera, or over a video."
        )
        with gr.Tab("Photo"):
            _photo_tab(gr, predictor)
        with gr.Tab("Live camera"):
            _camera_tab(gr, predictor)
        with gr.Tab("Video"):
            _video_tab(gr, predictor)
    return demo


def _photo_tab(gr, predictor: Predictor) -> None:
    with gr.Row():
        with gr.Column():
            # image_mode=None: Gradio hands over the uploaded file itself. Its default ("RGB")
            # re-saves every gray or RGBA upload under a name derived from the content,
            # non-atomically, so concurrent uploads of the same photo read each other's
            # half-written files (the soak in benchmarks/bench_serve.py catches it); our loader
            # handles every mode, 16-bit included, and EXIF itself.
            image = gr.Image(sources=["upload", "webcam"], type="filepath", image_mode=None, label="photo")
            gradcam = gr.Checkbox(label="show Grad-CAM (what the model looked at)", value=False)
            button = gr.Button("Analyze", variant="primary")
        with gr.Column():
            annotated = gr.Image(label="faces found", type="pil", format="png")
            label = gr.Label(num_top_classes=7, label="first face")
    faces = gr.JSON(label="all faces")
    cams = gr.Gallery(label="Grad-CAM", columns=4, height="auto", format="png")
    button.click(
        lambda path, cam: analyze(predictor, path, cam),
        inputs=[image, gradcam],
        outputs=[annotated, label, faces, cams],
        api_name="predict",
    )


def _camera_tab(gr, predictor: Predictor) -> None:
    gr.Markdown("Faces are tracked from frame to frame and their labels smoothed over half a second.")
    with gr.Row():
        camera = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="camera")
        live = gr.Image(label="faces", type="numpy")
    tracker = gr.State(None)
    camera.stream(
        lambda frame, state: live_frame(predictor, frame, state),
        inputs=[camera, tracker],
        outputs=[live, tracker],
        stream_every=0.2,
        time_limit=120,
        concurrency_limit=CONCURRENCY,
    )


def _video_tab(gr, predictor: Predictor) -> None:
    with gr.Row():
        with gr.Column():
            video = gr.Video(sources=["upload"], format=None, label=f"video (up to {MAX_FILE_SIZE})")
            smooth = gr.Slider(0, 2, value=DEFAULT_SMOOTHING, step=0.1, label="smoothing (seconds)")
            button = gr.Button("Analyze video", variant="primary")
        with gr.Column():
            timeline = gr.Image(label="expressions over time, per person", type="filepath")
    tracks = gr.Dataframe(label="per person (track)")
    rows = gr.File(label="every face in every frame (CSV)")
    button.click(
        lambda path, seconds, progress=gr.Progress(track_tqdm=True): analyze_video_upload(  # noqa: B008
            predictor, path, seconds, progress
        ),
        inputs=[video, smooth],
        outputs=[timeline, tracks, rows],
        api_name="video",
    )


def sweep_stale_files(folder: Path, older_than: float) -> int:
    """Delete the files under ``folder`` last modified more than ``older_than`` seconds ago (and
    the folders that leaves empty); returns how many files went."""
    cutoff, removed = time.time() - older_than, 0
    for path in sorted(folder.rglob("*"), reverse=True):  # files before the folders that hold them
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        except OSError:
            continue  # in use or already gone: the next sweep tries again
    return removed


def private_upload_folder() -> Path:
    """A folder of this server process for everything clients send: Gradio's uploads and annotated
    copies (``GRADIO_TEMP_DIR``) and the raw temporary files of uploads still arriving, which
    Gradio's ``delete_cache`` never sees (an upload the client aborts leaves one behind). A daemon
    thread deletes whatever is older than ``DELETE_CACHE`` allows; the folder goes when the process ends."""
    folder = Path(tempfile.mkdtemp(prefix="fer-app-")).resolve()
    (folder / "partial").mkdir()
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    tempfile.tempdir = str(folder / "partial")  # where the multipart parser writes uploads in flight
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    every, older_than = DELETE_CACHE

    def sweep() -> None:
        while True:
            time.sleep(every)
            sweep_stale_files(folder, older_than)

    threading.Thread(target=sweep, name="fer-app-sweeper", daemon=True).start()
    return folder


def serve(predictor: Predictor, host: str = "127.0.0.1", port: int = 7860, share: bool = False) -> None:
    """Launch the app (blocking) with a bounded queue, so a burst of uploads waits its turn
    instead of piling up, and several requests run at once, so one slow photo cannot starve the rest.
    Uploads live in a folder of this process (:func:`private_upload_folder`), swept and then removed."""
    require_gradio()
    if (warning := exposure_warning(host, share)) is not None:
        print(warning, file=sys.stderr)
    private_upload_folder()
    app = build_app(predictor).queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    try:
        app.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE)
    except OSError as err:
        if "port" not in str(err):
            raise
        raise FERConfigError(
            f"cannot serve on {host}:{port} (the port is taken, or not allowed); choose another with --port"
        ) from None
