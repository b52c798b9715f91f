"""Grad-CAM resolution: which layer and method let a map show facial parts, by measurement.

For a stratified sample of labelled faces, prints each variant's map size, the mean share of
its mass on the eyes and brows and on the mouth (``fer_utils.model.gradcam.FACE_PARTS``) against those
parts' share of the area, and the time per face. Asserts nothing.

    python benchmarks/bench_gradcam.py [--data DIR_OR_CSV] [--checkpoint FILE] [--faces 210]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from fer_utils.data import load_dataset, stratified_sample
from fer_utils.model.gradcam import cam_resolution, face_part_share
from fer_utils.predict.predictor import Predictor

VARIANTS = {
    "Grad-CAM, last layer": {"method": "gradcam", "layer": "last"},
    "Grad-CAM, stride 8": {"method": "gradcam", "layer": "fine"},
    "LayerCAM, last layer": {"method": "layercam", "layer": "last"},
    "LayerCAM, stride 8 (default)": {"method": "layercam", "layer": "fine"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("FER_DATA_DIR", "synthetic"))
    parser.add_argument("--checkpoint", default="models/fer2013_efficientnet-lite0.safetensors")
    parser.add_argument("--faces", type=int, default=210)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data, progress=False)
    faces = stratified_sample(dataset.split(dataset.default_eval_split()), args.faces, seed=0)
    predictor = Predictor.from_checkpoint(args.checkpoint, runtime="torch", device="cpu")
    size = predictor.checkpoint.image_size
    print(f"{len(faces.labels)} faces of {args.data}, {args.checkpoint}, {args.threads} thread(s)")
    for name, options in VARIANTS.items():
        start = time.perf_counter()
        maps = predictor.gradcam(list(faces.images), **options)
        ms = (time.perf_counter() - start) / len(maps) * 1000
        share = face_part_share(maps)
        cells = "/".join(f"{c}x{c}" for c in cam_resolution(predictor.model, size, options["layer"]))
        print(
            f"{name:30s} {cells:>12s} cells; eyes and brows {share['eyes and brows']:.3f}, mouth {share['mouth']:.3f}, "
            f"both {share['eyes and brows'] + share['mouth']:.3f} (area {share['area']:.3f}); {ms:.1f} ms/face"
        )


if __name__ == "__main__":
    main()
