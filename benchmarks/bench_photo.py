"""Photo benchmark: YuNet vs Haar detection, alignment, and per-photo time before and after.

Prints figures; asserts nothing.

    python benchmarks/bench_photo.py [--checkpoint FILE] [--data FER2013_DIR] [--faces 200] [--only timing]

With ``--data`` (or $FER_DATA_DIR), FER2013 PublicTest faces (labels known) are pasted, enlarged,
into 640x480 canvases at several sizes and in-plane rotations (0, +-15, +-30 degrees):
- crop calibration: each detector's box against the known FER2013 crop (gives the crop scales
  in fer_utils.faces.detection);
- detection recall, YuNet vs Haar, per size and rotation;
- accuracy of the model on the detected faces, with and without alignment, beside its accuracy
  on the original 48x48 crops.
Always: false positives on images without faces, and the time per 640x480 photo with one face
(detection + classification, 1 thread): before (Haar + PyTorch) and after (YuNet + ONNX Runtime).
"""

from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np
import torch

from bench_core import mean_ms
from fer_utils.core.errors import FERConfigError
from fer_utils.faces.detection import HaarDetector, YuNetDetector, crop_face
from fer_utils.predict.predictor import Predictor

ROTATIONS = (-30, -15, 0, 15, 30)
SIZES = (80, 160, 320)


def pasted(face: np.ndarray, size: int = 192, angle: float = 0.0, background: int = 128) -> np.ndarray:
    """A 640x480 canvas with ``face`` enlarged to ``size`` px at its centre, rotated by ``angle``."""
    canvas = np.full((480, 640), background, np.uint8)
    x, y = 320 - size // 2, 240 - size // 2
    canvas[y : y + size, x : x + size] = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
    if angle:
        matrix = cv2.getRotationMatrix2D((320, 240), angle, 1.0)
        canvas = cv2.warpAffine(canvas, matrix, (640, 480), flags=cv2.INTER_LINEAR, borderValue=background)
    return canvas


def haar_or_none() -> HaarDetector | None:
    try:
        return HaarDetector()
    except FERConfigError as err:
        print(f"Haar: not available here ({err})")
        return None


def calibrate(detectors: list, faces, n: int) -> None:
    for detector in detectors:
        ratios, shifts = [], []
        for face in faces.images[:n]:
            boxes = detector.detect(pasted(face))
            if boxes:
                box = boxes[0]
                ratios.append(max(box.w, box.h) / 192)
                shifts.append((240 - (box.y + box.h / 2)) / box.h)
        q1, med, q3 = np.percentile(ratios, [25, 50, 75])
        print(
            f"calibration, {detector.name}: box side / FER2013 crop median {med:.3f} (IQR {q1:.2f}-{q3:.2f}) "
            f"-> crop scale {1 / med:.2f}; crop centre below box centre: {np.median(shifts):+.3f} x box height "
            f"({len(ratios)}/{n} found)"
        )


def detect_and_classify(predictor: Predictor, detectors: list, faces, n: int) -> None:
    images, labels = faces.images[:n], faces.labels[:n]
    base = predictor.predict_arrays(list(images)).argmax(1)
    print(f"accuracy on the original 48x48 crops of these {n} faces (the ceiling): {np.mean(base == labels):.3f}")
    header = (
        "size  angle | "
        + " | ".join(f"{d.name} recall" for d in detectors)
        + " | acc aligned | acc aligned, first landmarks | acc not aligned"
    )
    print(header)
    for size in SIZES:
        for angle in ROTATIONS:
            recalls, aligned, first, plain, found_labels = [], [], [], [], []
            for detector in detectors:
                hits = 0
                for face, label in zip(images, labels, strict=True):
                    canvas = pasted(face, size, angle)
                    boxes = detector.detect(canvas)
                    hit = [
                        b for b in boxes if abs(b.x + b.w / 2 - 320) < size / 2 and abs(b.y + b.h / 2 - 240) < size / 2
                    ]
                    hits += bool(hit)
                    if hit and detector is detectors[0]:
                        refined = detector.refine_landmarks(canvas, hit[0])  # what Predictor does
                        aligned.append(crop_face(canvas, refined, align=True))
                        first.append(crop_face(canvas, hit[0], align=True))
                        plain.append(crop_face(canvas, hit[0], align=False))
                        found_labels.append(label)
                recalls.append(hits / n)
            y = np.array(found_labels)
            acc_a = np.mean(predictor.predict_arrays(aligned).argmax(1) == y) if aligned else float("nan")
            acc_f = np.mean(predictor.predict_arrays(first).argmax(1) == y) if first else float("nan")
            acc_p = np.mean(predictor.predict_arrays(plain).argmax(1) == y) if plain else float("nan")
            cells = " | ".join(f"{r:11.3f}" for r in recalls)
            print(f"{size:4d} {angle:+6d} | {cells} | {acc_a:11.3f} | {acc_f:28.3f} | {acc_p:15.3f}")


def non_faces() -> list[np.ndarray]:
    """Images without a (human) face: scikit-image's non-portrait samples, noise, gradients, text."""
    from skimage import data

    rng = np.random.default_rng(0)
    images = []
    for name in (
        "coffee",
        "chelsea",
        "rocket",
        "brick",
        "grass",
        "gravel",
        "moon",
        "text",
        "page",
        "horse",
        "coins",
        "clock",
        "hubble_deep_field",
        "immunohistochemistry",
        "logo",
        "motorcycle_left",
        "retina",
        "shepp_logan_phantom",
    ):
        try:
            image = getattr(data, name)()
        except Exception:  # noqa: BLE001 - a sample missing from this scikit-image version (or needing a download)
            continue
        image = image[..., :3] if image.ndim == 3 else image
        gray = cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image.astype(np.uint8)
        images.append(cv2.resize(gray, (640, 480)))
    images += [rng.integers(0, 256, (480, 640), dtype=np.uint8) for _ in range(10)]
    images += [np.tile(np.linspace(0, 255, 640, dtype=np.uint8), (480, 1)) for _ in range(2)]
    return images


def false_positives(detectors: list) -> None:
    from skimage import data

    images = non_faces()
    lfw = np.load(os.path.join(os.path.dirname(data.__file__), "lfw_subset.npy"))
    patches = [cv2.resize((p * 255).astype(np.uint8), (200, 200)) for p in lfw[100:]]  # its 100 non-face patches
    canvases = [np.pad(p, ((140, 140), (220, 220)), constant_values=128) for p in patches]
    for detector in detectors:
        fp_images = sum(bool(detector.detect(im)) for im in images)
        fp_patches = sum(bool(detector.detect(c)) for c in canvases)
        print(
            f"false positives, {detector.name}: {fp_images}/{len(images)} non-face images, "
            f"{fp_patches}/{len(canvases)} LFW non-face patches with a face reported"
        )


def timing(checkpoint: str | None, repeats: int = 30) -> None:
    from skimage import data

    photo = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY), (480, 480))
    photo = np.pad(photo, ((0, 0), (80, 80)), mode="edge")  # 640x480 with one face
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rows = {}
    for label, detector, runtime, align in (
        ("before: Haar + PyTorch", "haar", "torch", True),
        ("after: YuNet + ONNX Runtime, landmarks measured again (default)", "yunet", "onnx", True),
        ("YuNet + ONNX Runtime, no alignment (--no-align)", "yunet", "onnx-no-align", False),
    ):
        try:
            started = time.perf_counter()
            predictor = Predictor.from_checkpoint(
                checkpoint, detector=detector, runtime=runtime.split("-")[0], threads=1, align=align
            )
            predictor.predict_image(photo)  # first call: loads the detector, builds or reads the ONNX cache
            ready_s = time.perf_counter() - started
        except FERConfigError as err:
            print(f"{label}: not available here ({err})")
            continue
        face = predictor.predict_image(photo).faces[0].face
        photo_ms = mean_ms(lambda p=predictor: p.predict_image(photo), repeats)
        face_ms = mean_ms(lambda p=predictor, f=face: p.predict_arrays([f]), repeats * 3)
        rows[runtime] = (photo_ms, face_ms)
        print(
            f"{label}: {photo_ms:.1f} ms per 640x480 photo with one face, {face_ms:.2f} ms per face "
            f"classified (batch 1), 1 thread; ready after {ready_s:.1f} s"
        )
    if "torch" in rows and "onnx" in rows:
        (p0, f0), (p1, f1) = rows["torch"], rows["onnx"]
        print(f"speed-up: {p0 / p1:.1f}x per photo, {f0 / f1:.1f}x per face")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--data", default=os.environ.get("FER_DATA_DIR"))
    parser.add_argument("--faces", type=int, default=200, help="PublicTest faces per condition")
    parser.add_argument("--only", choices=("calibrate", "timing", "all"), default="all")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    if args.only == "timing":
        timing(args.checkpoint)
        return
    detectors = [YuNetDetector()] + [d for d in [haar_or_none()] if d is not None]
    if args.data:
        from fer_utils.data import load_dataset

        faces = load_dataset(args.data, progress=False).splits["val"]
        order = np.random.default_rng(0).permutation(len(faces))[: args.faces]
        faces = faces.subset(order)
        calibrate(detectors, faces, args.faces)
        if args.only == "calibrate":
            return
        predictor = Predictor.from_checkpoint(args.checkpoint, threads=1)
        detect_and_classify(predictor, detectors, faces, args.faces)
    false_positives(detectors)
    timing(args.checkpoint)


if __name__ == "__main__":
    main()
