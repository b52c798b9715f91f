"""Running a checkpoint's classifier in ONNX Runtime: exported once, cached by content, checked.

One face through PyTorch costs 14-18 ms at batch 1 on this CPU; the same graph in ONNX Runtime
about 1.2 ms. The Predictor therefore exports the model the first time it sees it (a few seconds),
keeps the file in the user cache keyed by a hash of the weights, and checks that ONNX Runtime's
probabilities agree with PyTorch's before using it. Training and Grad-CAM stay in PyTorch.
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fer_utils.checkpoints import Checkpoint
from fer_utils.errors import FERConfigError, FERError

EXPORT_FORMAT = 1
"""Bumped when the cached graph's contents change, so old cache entries are not reused."""


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
    graph as shape arithmetic (1,758 nodes for the shipped ensemble; 705 frozen). Measured on the
    ensemble, ONNX Runtime, batch 1, 1 thread, two runs each: 5.9-6.5 ms per face frozen against
    6.7-7.0 ms; torch's dynamo exporter gives 5.1-5.4 ms but takes 48 s to export instead of 4 s."""
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
    """A hash of everything the exported graph depends on: weights, input size, classes, torch."""
    digest = hashlib.sha256()
    header = f"{EXPORT_FORMAT}|{torch.__version__}|{checkpoint.image_size}|{','.join(checkpoint.classes)}"
    digest.update(header.encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def onnx_cache_dir() -> Path:
    """``$FER_CACHE_DIR/onnx`` (default ``~/.cache/fer_utils/onnx``)."""
    from fer_utils.data.cache import default_cache_dir

    return default_cache_dir() / "onnx"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _verified(path: Path) -> bool:
    """True when the cache entry is the file that was written for it (its recorded SHA-256 matches)."""
    try:
        return path.is_file() and _digest_file(path).read_text(encoding="ascii").strip() == _file_digest(path)
    except OSError:
        return False


_PROCESS_EXPORTS: dict[str, Path] = {}
"""Exports made for this process only, when the cache folder cannot be written: made once, reused."""


def _export_checked(model: torch.nn.Module, checkpoint: Checkpoint, path: Path) -> None:
    """Export ``model`` to ``path`` atomically, parity-checked, with its SHA-256 beside it."""
    from fer_utils.atomic import atomic_path, write_text_atomic
    from fer_utils.export import _export_model, parity_check

    was_training = model.training
    model.eval()
    try:
        with atomic_path(path) as tmp:
            frozen = freeze_same_padding(model.cpu(), checkpoint.image_size)
            try:
                _export_model(checkpoint, frozen, tmp, opset=17, dynamo=False)
            except OSError:
                raise  # the folder, not the exporter, failed: the caller falls back to a temporary folder
            except Exception:  # noqa: BLE001 - the TorchScript exporter is deprecated; fall back to dynamo
                _export_model(checkpoint, frozen, tmp, opset=18, dynamo=True)
            generator = torch.Generator().manual_seed(0)
            size = checkpoint.image_size
            parity_check(model.cpu(), tmp, torch.randn(4, 3, size, size, generator=generator))
            digest = _file_digest(tmp)
        write_text_atomic(_digest_file(path), digest + "\n")
    finally:
        model.train(was_training)


def cached_onnx(model: torch.nn.Module, checkpoint: Checkpoint, cache_dir: str | os.PathLike | None = None) -> Path:
    """The ONNX file for ``model``: from the cache if it verifies, else exported, parity-checked and stored.

    An entry is trusted only when its SHA-256 matches the one recorded when it was written, so a
    truncated file or another model's file under this name is rebuilt, not used. When the cache
    cannot be written (read-only HOME, full disk) the model is exported once for this process to a
    temporary folder, with one note saying so. Raises FERError when the export fails or disagrees
    with PyTorch.
    """
    key = weights_key(model, checkpoint)
    if key in _PROCESS_EXPORTS:
        return _PROCESS_EXPORTS[key]
    folder = Path(cache_dir) if cache_dir is not None else onnx_cache_dir()
    path = folder / f"{checkpoint.arch}-{checkpoint.image_size}-{key}.onnx"
    if _verified(path):
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


class OnnxClassifier:
    """An ONNX Runtime session that maps a (N, 3, S, S) float tensor to logits, like the model."""

    def __init__(self, path: str | os.PathLike, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise FERConfigError("runtime 'onnx' needs onnxruntime: pip install onnxruntime") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(inputs.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: batch})[0])
