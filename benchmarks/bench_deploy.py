"""Deployment benchmark: ONNX Runtime vs PyTorch latency per face (batch 1 and 64, one run),
exported model sizes (fp32 / int8) and the int8 model's accuracy change. Prints figures only.

    python benchmarks/bench_deploy.py [--checkpoint FILE] [--data FER2013_DIR] [--record]

--record adds this run's ONNX Runtime fp32 batch-1 time to the shipped model's entry in
models/figures.json, the one file the README, the model cards and docs/deployment.md quote.

--data (default $FER_DATA_DIR) adds the int8 vs fp32 accuracy on its validation split (PublicTest).
For an ensemble it also times the fp32 graph with ONNX Runtime's parallel executor (members'
branches side by side on the inter-op threads), the obvious idea for independent members.
In-browser time per face: benchmarks/bench_web.py.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def per_face_ms(fn, batch: np.ndarray, repeats: int) -> float:
    """Median time of one call, per face, after three warm-up calls. The median, not the mean:
    one run follows another runtime's calls in this process (PyTorch's threads may still be
    spinning) and shares a busy machine, so a few slow calls moved the mean by several ms."""
    for _ in range(3):
        fn(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / len(batch) * 1000


FIGURES = Path(__file__).resolve().parents[1] / "models" / "figures.json"


def record_cost(checkpoint: Path, ms: float) -> None:
    """Add one run's ms per face to a shipped model's entry in models/figures.json (written whole)."""
    import json

    from fer_utils.core.atomic import write_text_atomic

    figures = json.loads(FIGURES.read_text(encoding="utf-8"))
    entry = figures["models"].get(Path(checkpoint).name)
    if entry is None:
        print(f"not recorded: {checkpoint} is not a shipped model of {FIGURES}")
        return
    entry["ms_per_face"].append(round(ms, 1))
    write_text_atomic(FIGURES, json.dumps(figures, indent=1) + "\n")
    print(f"recorded {ms:.1f} ms per face for {Path(checkpoint).name} in {FIGURES}")


def main() -> None:
    import onnxruntime as ort

    from fer_utils.data import load_dataset
    from fer_utils.model.export import export_onnx
    from fer_utils.predict.predictor import Predictor
    from fer_utils.runtime.onnx import model_info

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--data", default=os.environ.get("FER_DATA_DIR"))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--record", action="store_true", help="add the fp32 batch-1 time to models/figures.json")
    args = parser.parse_args()
    predictor = Predictor.from_checkpoint(args.checkpoint)
    checkpoint = predictor.checkpoint.path
    print(
        f"model {checkpoint} ({predictor.checkpoint.arch}, {predictor.checkpoint.image_size}px), "
        f"{torch.get_num_threads()} threads"
    )
    with tempfile.TemporaryDirectory() as work:
        fp32 = export_onnx(checkpoint, Path(work) / "fp32.onnx")
        calibration = None
        if args.data:
            from fer_utils.data import training_splits

            train_set, _ = training_splits(load_dataset(args.data, progress=False))
            calibration = train_set.images[np.random.default_rng(0).choice(len(train_set), 256, replace=False)]
        int8 = export_onnx(checkpoint, Path(work) / "int8.onnx", int8=True, calibration_faces=calibration)
        print(
            f"ONNX size: fp32 {fp32.size_bytes / 1e6:.1f} MB, int8 {int8.size_bytes / 1e6:.1f} MB; "
            f"checkpoint {checkpoint.stat().st_size / 1e6:.1f} MB; parity max |dp| {fp32.max_probability_difference:.1e}"
        )
        sessions = {
            name: ort.InferenceSession(str(r.path), providers=["CPUExecutionProvider"])
            for name, r in (("fp32", fp32), ("int8", int8))
        }
        parallel = model_info(sessions["fp32"]).members > 1
        if parallel:
            options = ort.SessionOptions()
            options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
            options.inter_op_num_threads = torch.get_num_threads()
            options.intra_op_num_threads = 1
            sessions["fp32 parallel"] = ort.InferenceSession(
                str(fp32.path), options, providers=["CPUExecutionProvider"]
            )

        def onnx_fn(name):
            session = sessions[name]
            return lambda x: session.run(None, {"input": x})[0]

        faces = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)
        batch = predictor.input_tensor(faces).numpy()
        model = predictor.model.eval()
        with torch.inference_mode():
            torch_fn = lambda x: model(torch.from_numpy(x))  # noqa: E731
            for n in (1, 64):
                repeats = args.repeats if n == 1 else max(3, args.repeats // 10)
                t = per_face_ms(torch_fn, batch[:n], repeats)
                o = per_face_ms(onnx_fn("fp32"), batch[:n], repeats)
                q = per_face_ms(onnx_fn("int8"), batch[:n], repeats)
                print(
                    f"batch {n}: PyTorch {t:.2f} ms/face, ONNX Runtime fp32 {o:.2f} ms/face ({t / o:.1f}x), "
                    f"int8 {q:.2f} ms/face ({t / q:.1f}x)"
                )
                if n == 1 and args.record:
                    record_cost(checkpoint, o)
                if parallel:
                    b = per_face_ms(onnx_fn("fp32 parallel"), batch[:n], repeats)
                    print(f"batch {n}: ONNX Runtime fp32, members' branches in parallel: {b:.2f} ms/face")
        if args.data:
            val = load_dataset(args.data, progress=False).splits["val"]
            inputs = np.concatenate(
                [predictor.input_tensor(val.images[i : i + 256]).numpy() for i in range(0, len(val), 256)]
            )
            acc = {
                name: float(
                    (
                        np.concatenate([onnx_fn(name)(inputs[i : i + 256]) for i in range(0, len(inputs), 256)]).argmax(
                            1
                        )
                        == val.labels
                    ).mean()
                )
                for name in ("fp32", "int8")
            }
            print(
                f"PublicTest accuracy ({len(val)} faces, no TTA): fp32 {acc['fp32']:.4f}, int8 {acc['int8']:.4f} "
                f"(change {100 * (acc['int8'] - acc['fp32']):+.2f} points)"
            )


if __name__ == "__main__":
    main()
