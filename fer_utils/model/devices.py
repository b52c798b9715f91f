"""Where a model runs and in which precision: ``auto`` picks CUDA, then Apple MPS, then the CPU.

Every part of the package that runs a model (training, evaluation, the Predictor, Grad-CAM,
the widgets and the web app) asks ``resolve_device``; checkpoints are always saved from CPU
copies, so a GPU-trained file loads on a laptop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from fer_utils.core.config import DEVICE_CHOICES, PRECISIONS
from fer_utils.core.errors import FERConfigError


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The torch device for ``name`` (auto, cpu, cuda, cuda:N, mps); FERConfigError if it is not here."""
    if isinstance(name, torch.device):
        return name
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise FERConfigError("device 'mps': Apple MPS is not available on this machine; use device 'cpu'")
        return torch.device("mps")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise FERConfigError(f"device {text!r}: CUDA is not available on this machine; use device 'cpu'")
        index = text.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise FERConfigError(
                f"device {text!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
        return torch.device(text)
    raise FERConfigError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {name!r}")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training on ``device``, or None for plain fp32.

    ``auto``: bf16 on CUDA where supported, else fp16 (with a gradient scaler); fp32 on CPU and
    MPS, where mixed precision was measured to slow small-image training (docs/training.md).
    """
    if precision not in PRECISIONS:
        raise FERConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Mixed precision for the forward pass when ``dtype`` is set; a no-op for fp32."""
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


def model_device(model: nn.Module) -> torch.device:
    """The device a model's weights live on (CPU for a model without parameters)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def release_freed_memory() -> None:
    """Hand memory that Python and PyTorch have freed back to the operating system. glibc keeps
    freed heap for reuse, so after a large one-off job (an ONNX export of an ensemble) a process
    can hold gigabytes it no longer uses; a notebook kernel would keep them until it stops."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
