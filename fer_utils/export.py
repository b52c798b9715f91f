"""Export a checkpoint to ONNX, with the metadata a runtime needs, and check it against PyTorch.

The ONNX graph takes ``input`` (N, 3, S, S) float32: a 48x48 gray face resized to S, scaled to
0..1, repeated to 3 channels and normalized with the stored mean/std; it returns ``logits``
(N, classes). The batch size is dynamic. ``metadata_props`` carry classes, image size, mean, std
and architecture as JSON/text, so a browser or server needs nothing else.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fer_utils.atomic import atomic_path, check_outputs
from fer_utils.checkpoints import Checkpoint, CheckpointSource, checkpoint_files, load_model
from fer_utils.errors import FERError

PARITY_TOLERANCE = 1e-4
"""Largest allowed difference between PyTorch and ONNX Runtime probabilities (fp32 export)."""


@dataclass
class ExportResult:
    """Where the model went, how big it is, and how closely ONNX Runtime matches PyTorch."""

    path: Path
    size_bytes: int
    max_probability_difference: float | None


def _export_model(checkpoint: Checkpoint, model: torch.nn.Module, out: Path, opset: int, dynamo: bool = True) -> None:
    """Write ``model`` as ONNX with a dynamic batch and the checkpoint's metadata. ``dynamo=False``
    uses torch's TorchScript exporter: measured 12x faster on an ensemble (4 s against 48 s), which
    is what the Predictor's on-the-fly cache wants; ``fer export`` keeps the default exporter."""
    for module in model.modules():  # efficientnet-pytorch: its memory-efficient swish cannot be traced
        if hasattr(module, "set_swish"):
            module.set_swish(memory_efficient=False)
    size = checkpoint.image_size
    example = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(
                model,
                (example,),
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
            program.save(str(out))
        else:
            torch.onnx.export(
                model.eval(),
                (example,),
                str(out),
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
    import onnx

    proto = onnx.load(str(out))
    meta = {
        "classes": json.dumps(list(checkpoint.classes)),
        "image_size": str(size),
        "mean": json.dumps(checkpoint.meta["mean"]),
        "std": json.dumps(checkpoint.meta["std"]),
        "arch": checkpoint.arch,
        "members": str(len(checkpoint.meta.get("members", [])) or 1),
        "input": "N x 3 x S x S float32: gray face scaled 0..1, repeated to 3 channels, normalized (x - mean) / std",
        "output": "logits; softmax for probabilities",
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(out))


def onnx_metadata(path: str | os.PathLike) -> dict:
    """Classes, image size, mean, std and architecture stored in an exported model."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    raw = session.get_modelmeta().custom_metadata_map
    return {
        "classes": json.loads(raw["classes"]),
        "image_size": int(raw["image_size"]),
        "mean": json.loads(raw["mean"]),
        "std": json.loads(raw["std"]),
        "arch": raw.get("arch"),
        "members": int(raw.get("members", 1)),
    }


def onnx_probabilities(path: str | os.PathLike, inputs: np.ndarray) -> np.ndarray:
    """Softmax probabilities from an ONNX model for preprocessed inputs (N, 3, S, S)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: inputs.astype(np.float32)})[0]
    return torch.from_numpy(logits).softmax(dim=1).numpy()


def parity_check(
    model: torch.nn.Module, onnx_path: str | os.PathLike, inputs: torch.Tensor, tolerance: float = PARITY_TOLERANCE
) -> float:
    """Largest |p_torch - p_onnx| over ``inputs``; raises FERError when above ``tolerance``."""
    with torch.no_grad():
        expected = model.eval()(inputs).softmax(dim=1).numpy()
    difference = float(np.abs(onnx_probabilities(onnx_path, inputs.numpy()) - expected).max())
    if difference > tolerance:
        raise FERError(
            f"{onnx_path}: ONNX Runtime probabilities differ from PyTorch by {difference:.2e} "
            f"(tolerance {tolerance:.0e}); the export is not faithful"
        )
    return difference


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray) -> None:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on preprocessed faces.

    Measured on the shipped model: dynamic quantization lost 27 points of PublicTest accuracy
    and ran slower; calibrated static quantization keeps the accuracy and runs faster.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": calibration[i : i + 32]} for i in range(0, len(calibration), 32)])

        def get_next(self):
            return next(self.batches, None)

    prepared = fp32_path.with_name(fp32_path.name + ".pre")
    try:
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    finally:
        prepared.unlink(missing_ok=True)


def export_onnx(
    checkpoint: CheckpointSource,
    out: str | os.PathLike,
    opset: int = 18,
    check: bool = True,
    int8: bool = False,
    calibration_faces: np.ndarray | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export ``checkpoint`` to ONNX at ``out`` (atomically) and check parity with PyTorch.

    ``int8`` quantizes statically, calibrated on ``calibration_faces`` (uint8 48x48 faces from the
    training data; a few hundred suffice). Without them synthetic faces are used, which gives
    poorer ranges: pass real faces. int8 files are not parity-checked (they differ by design);
    measure their accuracy instead (benchmarks/bench_deploy.py). ``out`` never replaces the
    checkpoint, nor an existing file unless ``overwrite``.
    """
    check_outputs({"ONNX model": out}, inputs=checkpoint_files(checkpoint), overwrite=overwrite)
    model, ckpt = load_model(checkpoint)
    out = Path(out)
    with atomic_path(out) as tmp:
        _export_model(ckpt, model, tmp, opset)
        if int8:
            from fer_utils.inference import Predictor

            if calibration_faces is None:
                from fer_utils.data.synthetic import synthetic_faces

                calibration_faces = synthetic_faces(40, seed=0).images
            inputs = Predictor(model, ckpt).input_tensor(list(calibration_faces)).numpy()
            fp32 = tmp.with_name(tmp.name + ".fp32")
            tmp.rename(fp32)
            try:
                quantize_int8(fp32, tmp, inputs)
            finally:
                fp32.unlink(missing_ok=True)
    difference = None
    if check and not int8:
        generator = torch.Generator().manual_seed(0)
        inputs = torch.randn(8, 3, ckpt.image_size, ckpt.image_size, generator=generator)
        try:
            difference = parity_check(model, out, inputs)
        except FERError:
            out.unlink(missing_ok=True)
            raise
    return ExportResult(out, out.stat().st_size, difference)


WEB_RUNTIME_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs")
"""What the static demo needs from the onnxruntime-web npm package (copied into vendor/)."""


def build_web_demo(
    web_dir: str | os.PathLike,
    checkpoint: CheckpointSource,
    runtime_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Make ``web_dir`` (holding index.html/app.js) a complete static site: model.onnx (parity-checked),
    yunet.onnx (the face detector, with its licence), model.json (classes, size, normalization,
    detector and crop settings) and vendor/ (ONNX Runtime Web from ``runtime_dir``, default
    ``web_dir/node_modules/onnxruntime-web/dist``, installed by ``npm ci``)."""
    import shutil

    from fer_utils.atomic import write_text_atomic

    web_dir = Path(web_dir)
    check_outputs(
        {"web model": web_dir / "model.onnx", "web model description": web_dir / "model.json"},
        inputs=checkpoint_files(checkpoint),
        overwrite=overwrite,
    )
    runtime = Path(runtime_dir) if runtime_dir else web_dir / "node_modules" / "onnxruntime-web" / "dist"
    missing = [name for name in WEB_RUNTIME_FILES if not (runtime / name).is_file()]
    if missing:
        raise FERError(f"{runtime}: ONNX Runtime Web files missing ({', '.join(missing)}); run `npm ci` in {web_dir}")
    if not (web_dir / "index.html").is_file():
        raise FERError(
            f"{web_dir}: no index.html; point web_dir (CLI: --out) at the repository's web/ folder (or a copy of it)"
        )
    vendor = web_dir / "vendor"
    vendor.mkdir(exist_ok=True)
    for name in WEB_RUNTIME_FILES:
        shutil.copyfile(runtime / name, vendor / name)
    from fer_utils.detection import PACKAGED_YUNET, browser_settings, yunet_model_path
    from fer_utils.inference import CROP_MAX_SIDE

    detector = browser_settings()
    yunet = yunet_model_path()
    shutil.copyfile(yunet, web_dir / detector["file"])
    shutil.copyfile(PACKAGED_YUNET.with_name("LICENSE"), web_dir / "yunet-LICENSE.txt")  # MIT: travels with it
    result = export_onnx(checkpoint, web_dir / "model.onnx", overwrite=overwrite)
    meta = {**onnx_metadata(result.path), "detector": {**detector, "crop_max_side": CROP_MAX_SIDE}}
    write_text_atomic(web_dir / "model.json", json.dumps(meta, indent=2) + "\n")
    return result
