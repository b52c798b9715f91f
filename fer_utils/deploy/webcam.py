"""Live webcam: a local OpenCV loop with boxes, labels and FPS, and a Colab camera snapshot.

In Colab the browser owns the camera, so ``cv2.VideoCapture(0)`` cannot work there; use
:func:`colab_snapshot` to take a photo through JavaScript and pass it to the Predictor.
"""

from __future__ import annotations

import contextlib
import time
from typing import Protocol

import numpy as np

from fer_utils.core.errors import FERConfigError, FERDataError
from fer_utils.predict.frames import open_video
from fer_utils.predict.predictor import Predictor
from fer_utils.predict.timeline import FrameResult
from fer_utils.predict.video import DEFAULT_SMOOTHING, FrameAnalyzer
from fer_utils.predict.video_outputs import draw_tracks


class Capture(Protocol):
    def read(self) -> tuple[bool, np.ndarray]: ...
    def release(self) -> None: ...


def annotate_frame(
    analyzer: FrameAnalyzer, frame_bgr: np.ndarray, time_s: float, fps: float | None = None
) -> tuple[np.ndarray, FrameResult]:
    """Detect, classify, track and smooth the faces of a BGR camera frame taken at ``time_s``;
    return the frame with boxes, track ids, smoothed labels and FPS drawn."""
    import cv2

    result = analyzer.analyze(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY), time_s)
    out = draw_tracks(frame_bgr.copy(), result.faces)
    if fps is not None:
        cv2.putText(out, f"{fps:.1f} FPS", (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 0), 2)
    return out, result


def run_webcam(
    predictor: Predictor,
    camera: int = 0,
    capture: Capture | None = None,
    show: bool = True,
    max_frames: int | None = None,
    smooth: float = DEFAULT_SMOOTHING,
) -> list[FrameResult]:
    """Run the live loop until ``q``/Esc (or ``max_frames``); returns every frame's result.

    Faces are tracked and their probabilities smoothed over ``smooth`` seconds, as in ``fer
    video``, so labels do not flicker. A window needs desktop OpenCV (``pip install
    opencv-python``); the headless wheel this project installs has no GUI. ``capture`` may be any
    object with ``read()``/``release()``.
    """
    import cv2

    if capture is None:
        try:
            capture, _ = open_video(camera)  # quietly: OpenCV's own warnings about absent cameras are not shown
        except FERDataError as err:
            raise FERDataError(source=err.source, reason=f"{err.reason}; in Colab use colab_snapshot()") from None
    analyzer = predictor.video_analyzer(smooth).warm_up()
    results: list[FrameResult] = []
    fps, start = None, time.perf_counter()
    last = start
    try:
        while max_frames is None or len(results) < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            annotated, result = annotate_frame(analyzer, frame, time.perf_counter() - start, fps)
            results.append(result)
            now = time.perf_counter()
            fps = 1.0 / max(now - last, 1e-6) if fps is None else 0.9 * fps + 0.1 / max(now - last, 1e-6)
            last = now
            if show:
                try:
                    cv2.imshow("fer webcam (q to quit)", annotated)
                except cv2.error:
                    raise FERConfigError(
                        "this OpenCV build has no windows (opencv-python-headless); "
                        "pip install opencv-python for `fer webcam`"
                    ) from None
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
    finally:
        capture.release()
        if show:
            with contextlib.suppress(cv2.error):
                cv2.destroyAllWindows()
    return results


SNAPSHOT_JS = """
async function takePhoto(quality) {
  const div = document.createElement('div');
  const button = document.createElement('button');
  button.textContent = 'Capture';
  div.appendChild(button);
  const video = document.createElement('video');
  video.style.display = 'block';
  const stream = await navigator.mediaDevices.getUserMedia({video: true});
  document.body.appendChild(div);
  div.appendChild(video);
  video.srcObject = stream;
  await video.play();
  google.colab.output.setIframeHeight(document.documentElement.scrollHeight, true);
  await new Promise((resolve) => button.onclick = resolve);
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext('2d').drawImage(video, 0, 0);
  stream.getVideoTracks()[0].stop();
  div.remove();
  return canvas.toDataURL('image/jpeg', quality);
}
"""


def colab_snapshot(quality: float = 0.9) -> bytes:
    """In Google Colab: show the camera with a Capture button and return the JPEG bytes taken."""
    import base64

    try:
        from google.colab.output import eval_js
    except ImportError:
        raise FERConfigError(
            "colab_snapshot() works in Google Colab only; locally use `fer webcam` or a photo file"
        ) from None
    from IPython.display import Javascript, display

    display(Javascript(SNAPSHOT_JS))
    data_url = eval_js(f"takePhoto({quality})")
    return base64.b64decode(data_url.split(",", 1)[1])
