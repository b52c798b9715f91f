"""Export a checkpoint to ONNX, with the metadata a runtime needs, and check it against PyTorch.

The ONNX graph takes ``input`` (N, 3, S, S) float32: a 48x48 gray face resized to S, scaled to
0..1, repeated to 3 channels and normalized with the stored mean/std; it returns ``logits``
(N, classes). The batch size is dynamic; so are height and width for an ensemble of members of
several sizes, which takes the 48x48 face (or a TTA crop of it) and enlarges it for each member
itself. Its ``metadata_props`` carry the model's description
(:meth:`fer_utils.runtime.description.ModelDescription.onnx_props`: classes, image size, mean,
std, members, architecture) as JSON/text, so a browser or server needs nothing else.
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fer_utils.core.atomic import atomic_path, write_text_atomic
from fer_utils.core.errors import FERError
from fer_utils.core.metadata import CheckpointSource
from fer_utils.core.outputs import check_outputs
from fer_utils.data.images import DEFAULT_FACE_SIZE, square_resize
from fer_utils.model.assembly import load_model
from fer_utils.model.checkpoints import Checkpoint, checkpoint_files
from fer_utils.model.devices import release_freed_memory
from fer_utils.runtime.onnx import (
    EXPORT_FORMAT,
    OnnxClassifier,
    cache_entry,
    digest_file,
    file_digest,
    model_info,
    require_exporter,
    verified,
)
from fer_utils.runtime.preprocess import crop_boxes

PARITY_TOLERANCE = 1e-4
"""Largest allowed difference between PyTorch and ONNX Runtime probabilities (fp32 export)."""


@dataclass
class ExportResult:
    """Where the model went, how big it is, and how closely ONNX Runtime matches PyTorch."""

    path: Path
    size_bytes: int
    max_probability_difference: float | None


def _export_graph(checkpoint: Checkpoint, model: torch.nn.Module, out: Path, opset: int, dynamo: bool = True) -> None:
    """Write ``model`` as ONNX with a dynamic batch and the checkpoint's metadata. ``dynamo=False``
    uses torch's TorchScript exporter, many times faster to export an ensemble, which is what the
    Predictor's on-the-fly cache wants; ``fer export`` keeps the default exporter."""
    require_exporter()
    for module in model.modules():  # efficientnet-pytorch: its memory-efficient swish cannot be traced
        if hasattr(module, "set_swish"):
            module.set_swish(memory_efficient=False)
    size = checkpoint.image_size
    example = torch.zeros(2, 3, size, size)
    any_size = checkpoint.description.resizes_input  # an ensemble that enlarges its input itself
    axes = {0: "batch", 2: "height", 3: "width"} if any_size else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            side = torch.export.Dim("side", min=8, max=512)
            program = torch.onnx.export(
                model,
                (example,),
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch"), **({2: side, 3: side} if any_size else {})},),
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
                dynamic_axes={"input": axes, "logits": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
    import onnx

    proto = onnx.load(str(out))
    meta = checkpoint.description.onnx_props()
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(out))


def onnx_metadata(path: str | os.PathLike) -> dict:
    """Classes, image size, mean, std and architecture stored in an exported model."""
    return model_info(path).to_dict()


def parity_check(
    model: torch.nn.Module, onnx_path: str | os.PathLike, inputs: torch.Tensor, tolerance: float = PARITY_TOLERANCE
) -> float:
    """Largest |p_torch - p_onnx| over ``inputs``; raises FERError when above ``tolerance``."""
    with torch.no_grad():
        expected = model.eval()(inputs).softmax(dim=1).numpy()
    difference = float(np.abs(OnnxClassifier(onnx_path).probabilities(inputs.numpy()) - expected).max())
    if difference > tolerance:
        raise FERError(
            f"{onnx_path}: ONNX Runtime probabilities differ from PyTorch by {difference:.2e} "
            f"(tolerance {tolerance:.0e}); the export is not faithful"
        )
    return difference


def parity_inputs(checkpoint: Checkpoint, n: int) -> list[torch.Tensor]:
    """Random inputs for the parity check: ``n`` at the model's input size, and ``n`` at the TTA
    crops' size for a graph that takes any size (an ensemble that resizes its input itself)."""
    generator = torch.Generator().manual_seed(0)
    sides = [checkpoint.image_size]
    if checkpoint.description.resizes_input:
        sides.append(crop_boxes(checkpoint.image_size)[0][2])
    return [torch.randn(n, 3, side, side, generator=generator) for side in sides]


CALIBRATION_BATCH = 4
"""Faces per int8 calibration run: memory grows with it, the recorded ranges do not change."""


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray) -> None:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on preprocessed faces.

    Static, because dynamic quantization lost most of the shipped model's accuracy and ran slower;
    calibrated static quantization keeps the accuracy and runs faster (docs/deployment.md).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            # small batches: the calibration graph keeps every activation of every member for a
            # batch, and min/max ranges do not depend on how the faces are batched
            step = CALIBRATION_BATCH
            self.batches = iter([{"input": calibration[i : i + step]} for i in range(0, len(calibration), step)])

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
        _export_graph(ckpt, model, tmp, opset)
        if int8:
            if calibration_faces is None:
                from fer_utils.data.synthetic import synthetic_faces

                calibration_faces = synthetic_faces(40, seed=0).images
            faces = np.stack([square_resize(f, DEFAULT_FACE_SIZE) for f in calibration_faces])
            inputs = ckpt.description.inputs(faces)
            fp32 = tmp.with_name(tmp.name + ".fp32")
            tmp.rename(fp32)
            try:
                quantize_int8(fp32, tmp, inputs)
            finally:
                fp32.unlink(missing_ok=True)
    difference = None
    if check and not int8:
        try:
            difference = max(parity_check(model, out, inputs) for inputs in parity_inputs(ckpt, 8))
        except FERError:
            out.unlink(missing_ok=True)
            raise
    release_freed_memory()  # the exporter's working memory, freed but still held by the process
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

    from fer_utils.core.atomic import write_text_atomic

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
    from fer_utils.faces.detection import CROP_MAX_SIDE, PACKAGED_YUNET, browser_settings, yunet_model_path

    detector = browser_settings()
    yunet = yunet_model_path()
    shutil.copyfile(yunet, web_dir / detector["file"])
    shutil.copyfile(PACKAGED_YUNET.with_name("LICENSE"), web_dir / "yunet-LICENSE.txt")  # MIT: travels with it
    result = export_onnx(checkpoint, web_dir / "model.onnx", overwrite=overwrite)
    meta = {**onnx_metadata(result.path), "detector": {**detector, "crop_max_side": CROP_MAX_SIDE}}
    write_text_atomic(web_dir / "model.json", json.dumps(meta, indent=2) + "\n")
    return result


# ---- the Predictor's cache of exports --------------------------------------------------------


class _StaticSamePad(nn.Module):
    """A timm ``Conv2dSame`` frozen for one input size: a constant pad, then the convolution."""

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv, self.pads = conv, pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(F.pad(x, self.pads), c.weight, c.bias, c.stride, 0, c.dilation, c.groups)


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> int:
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def freeze_same_padding(model: nn.Module, image_size: int) -> nn.Module:
    """A copy of ``model`` whose TensorFlow-style "same" convolutions (timm's ``Conv2dSame``, used by
    EfficientNet-Lite0) pad by constants for ``image_size`` inputs. Their padding is otherwise
    computed from the input's shape at every call, which the TorchScript exporter writes into the
    graph as shape arithmetic; frozen, the graph has fewer than half the nodes and runs faster in
    ONNX Runtime (benchmarks/bench_deploy.py; docs/deployment.md)."""
    frozen = copy.deepcopy(model).eval()
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        module.register_forward_pre_hook(lambda _, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:])))
        for name, module in frozen.named_modules()
        if type(module).__name__ == "Conv2dSame"
    ]
    with torch.no_grad():
        frozen(torch.zeros(1, 3, image_size, image_size))
    for hook in hooks:
        hook.remove()
    for name, (height, width) in sizes.items():
        conv = frozen.get_submodule(name)
        pad_h = _same_padding(height, conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        pad_w = _same_padding(width, conv.kernel_size[1], conv.stride[1], conv.dilation[1])
        parent_name, _, attr = name.rpartition(".")
        parent = frozen.get_submodule(parent_name) if parent_name else frozen
        setattr(parent, attr, _StaticSamePad(conv, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)))
    return frozen


def weights_key(model: torch.nn.Module, checkpoint: Checkpoint) -> str:
    """The cache key of a model held in memory (a file's export is keyed by its bytes instead,
    :func:`fer_utils.runtime.onnx.checkpoint_key`): weights, input size, classes."""
    digest = hashlib.sha256()
    header = f"{EXPORT_FORMAT}|weights|{checkpoint.image_size}|{','.join(checkpoint.classes)}"
    digest.update(header.encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


_PROCESS_EXPORTS: dict[str, Path] = {}
"""Exports made for this process only, when the cache folder cannot be written: made once, reused."""


def _export_checked(model: torch.nn.Module, checkpoint: Checkpoint, path: Path) -> None:
    """Export ``model`` to ``path`` atomically, parity-checked, with its SHA-256 beside it."""
    was_training = model.training
    model.eval()
    try:
        with atomic_path(path) as tmp:
            frozen = freeze_same_padding(model.cpu(), checkpoint.image_size)
            try:
                _export_graph(checkpoint, frozen, tmp, opset=17, dynamo=False)
            except OSError:
                raise  # the folder, not the exporter, failed: the caller falls back to a temporary folder
            except Exception:  # noqa: BLE001 - the TorchScript exporter is deprecated; fall back to dynamo
                _export_graph(checkpoint, frozen, tmp, opset=18, dynamo=True)
            for inputs in parity_inputs(checkpoint, 4):
                parity_check(model.cpu(), tmp, inputs)
            digest = file_digest(tmp)
        write_text_atomic(digest_file(path), digest + "\n")
    finally:
        model.train(was_training)
        release_freed_memory()  # the exporter's working memory: a notebook kernel would keep it


def cached_onnx(
    model: torch.nn.Module, checkpoint: Checkpoint, cache_dir: str | os.PathLike | None = None, key: str | None = None
) -> Path:
    """The ONNX file for ``model``: from the cache if it verifies, else exported, parity-checked and stored.

    ``key`` names the entry (default: a hash of the weights; the Predictor passes the checkpoint
    files' :func:`fer_utils.runtime.onnx.checkpoint_key`, so a later process finds the entry without
    torch). An entry is trusted only when its SHA-256 matches the one recorded when it was written, so a
    truncated file or another model's file under this name is rebuilt, not used. When the cache
    cannot be written (read-only HOME, full disk) the model is exported once for this process to a
    temporary folder, with one note saying so. Raises FERError when the export fails or disagrees
    with PyTorch.
    """
    key = key or weights_key(model, checkpoint)
    if key in _PROCESS_EXPORTS:
        return _PROCESS_EXPORTS[key]
    path = cache_entry(key, cache_dir)
    folder = path.parent
    if verified(path):
        return path
    try:
        _export_checked(model, checkpoint, path)
        return path
    except OSError as err:
        reason = err.strerror or str(err)
    scratch = Path(tempfile.mkdtemp(prefix="fer-onnx-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    print(
        f"note: cannot write the ONNX cache in {folder} ({reason}); exported the model for this run only. "
        "Set FER_CACHE_DIR to a writable folder to keep the export between runs",
        file=sys.stderr,
    )
    try:
        _export_checked(model, checkpoint, scratch / path.name)
    except OSError as err:
        raise FERError(
            f"cannot export the model for ONNX Runtime: neither {folder} nor {scratch} can be written "
            f"({err.strerror or err}); free some disk space, set FER_CACHE_DIR to a writable folder, "
            "or use runtime 'torch' (CLI: --runtime torch)"
        ) from None
    _PROCESS_EXPORTS[key] = scratch / path.name
    return _PROCESS_EXPORTS[key]
