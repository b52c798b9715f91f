"""Photo benchmark: face-crop calibration, detection rate, per-photo latency (detection vs classification).

Prints figures; asserts nothing.

    python benchmarks/bench_photo.py [--checkpoint FILE] [--data FER2013_DIR]

- Crop calibration (needs --data / $FER_DATA_DIR): FER2013 PublicTest faces are pasted, enlarged,
  into a 640x480 canvas; the Haar box is compared with the known crop (gives detection.CROP_SCALE).
- Detection rate on real photos that ship inside scikit-image (NASA's public-domain astronaut
  portrait; the LFW face subset, enlarged) and on pasted FER2013 faces.
- Latency for a 640x480 photo with one face, detection and classification timed apart, on 1 and
  2 threads.
"""

from __future__ import annotations

import argparse
import os

import cv2
import numpy as np
import torch

from bench_core import mean_ms
from fer_utils.detection import FaceDetector, crop_face
from fer_utils.inference import Predictor


def pasted(face: np.ndarray, size: int = 192, at: tuple[int, int] = (200, 140)) -> np.ndarray:
    canvas = np.full((480, 640), 128, np.uint8)
    x, y = at
    canvas[y : y + size, x : x + size] = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
    return canvas


def calibrate(detector: FaceDetector, data: str, n: int = 400) -> None:
    from fer_utils.data import load_dataset

    faces = load_dataset(data, progress=False).splits["val"]
    rng = np.random.default_rng(0)
    ratios, found = [], 0
    for i in rng.choice(len(faces), n, replace=False):
        boxes = detector.detect(pasted(faces.images[i]))
        if boxes:
            found += 1
            ratios.append(boxes[0].w / 192)
    q1, med, q3 = np.percentile(ratios, [25, 50, 75])
    print(
        f"pasted FER2013 PublicTest faces: detected {found}/{n} ({found / n:.0%}); Haar box / FER crop "
        f"median {med:.2f} (IQR {q1:.2f}-{q3:.2f}) -> crop scale {1 / med:.2f}"
    )


def detection_rates(detector: FaceDetector) -> None:
    from skimage import data

    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    print(f"astronaut portrait (512x512, 1 face): {len(detector.detect(astronaut))} face(s) found")
    lfw = np.load(os.path.join(os.path.dirname(data.__file__), "lfw_subset.npy"))[:100]  # first 100 are faces
    hits = sum(bool(detector.detect(pasted((face * 255).astype(np.uint8), size=120))) for face in lfw)
    print(f"LFW subset faces (25x25, enlarged to 120 px in a 640x480 canvas): {hits}/100 detected")
    others = np.load(os.path.join(os.path.dirname(data.__file__), "lfw_subset.npy"))[100:]  # the 100 non-faces
    false = sum(bool(detector.detect(pasted((patch * 255).astype(np.uint8), size=120))) for patch in others)
    print(f"LFW subset non-face patches, same setup: {false}/100 with a face reported (false positives)")


def latency(predictor: Predictor, repeats: int = 20) -> None:
    from skimage import data

    photo = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY), (480, 480))
    photo = np.pad(photo, ((0, 0), (80, 80)), mode="edge")  # 640x480 with one face
    for threads in (1, 2):
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        boxes = predictor.detector.detect(photo)
        detect_ms = mean_ms(lambda: predictor.detector.detect(photo), repeats)
        box = boxes[0]
        classify_ms = mean_ms(lambda box=box: predictor.predict_arrays([crop_face(photo, box)]), repeats)
        print(
            f"640x480 photo, 1 face, {threads} thread(s): detection {detect_ms:.1f} ms, "
            f"crop+classification {classify_ms:.1f} ms, total {detect_ms + classify_ms:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--data", default=os.environ.get("FER_DATA_DIR"))
    args = parser.parse_args()
    predictor = Predictor.from_checkpoint(args.checkpoint)
    print(f"model: {predictor.checkpoint.path} ({predictor.checkpoint.arch}, {predictor.checkpoint.image_size}px)")
    if args.data:
        calibrate(predictor.detector, args.data)
    detection_rates(predictor.detector)
    latency(predictor)


if __name__ == "__main__":
    main()
