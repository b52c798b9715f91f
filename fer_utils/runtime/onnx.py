"""Running an exported classifier in ONNX Runtime, without torch: one session factory, the model's
own description (classes, input size, normalization) read from the file, and the user cache of
exports, whose entries are trusted only when they verify.

ONNX Runtime runs the same graph several times faster than eager PyTorch on a CPU, and a process
that only predicts never imports torch, whose start-up alone takes seconds (benchmarks/bench_deploy.py
and bench_startup.py; docs/deployment.md).
Exporting needs torch and lives in :mod:`fer_utils.model.export`; everything here needs only numpy and
onnxruntime.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer_utils.core.errors import FERCheckpointError, FERConfigError, install_hint
from fer_utils.core.locations import default_cache_dir
from fer_utils.runtime.description import ModelDescription
from fer_utils.runtime.preprocess import MAX_BATCH_INPUTS, softmax

EXPORT_FORMAT = 3
"""Bumped when the cached graph's contents change, so old cache entries are not reused."""

EXPORTER_MODULES = ("onnx", "onnxscript")
"""What torch's ONNX exporter imports: the ``export`` extra. Colab and a ``[course]`` install lack them."""


def exporter_missing() -> list[str]:
    """The exporter's modules this install lacks (none: a checkpoint can be exported to ONNX)."""
    return [name for name in EXPORTER_MODULES if importlib.util.find_spec(name) is None]


def require_exporter() -> None:
    """Fail in one line, naming the install, when a checkpoint cannot be exported here."""
    if missing := exporter_missing():
        raise FERConfigError(
            f"exporting to ONNX needs {' and '.join(missing)}, which this install lacks: {install_hint('export')}, "
            "or predict with runtime 'torch' (CLI: --runtime torch)"
        )


def open_session(path: str | os.PathLike, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session for ``path``: ``threads`` intra-op threads (0: ``$OMP_NUM_THREADS``
    when set, else one per core), one inter-op thread. Open once, reuse: opening costs milliseconds
    to seconds, a face about one millisecond."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise FERConfigError("running an ONNX model needs onnxruntime: pip install onnxruntime") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or _default_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no optimizer chatter on stderr
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
        raise FERCheckpointError(
            f"{path}: not a loadable ONNX model ({type(err).__name__}: {str(err)[:200]}); "
            "export one with `fer export --checkpoint MODEL.safetensors --out MODEL.onnx`"
        ) from None


def _default_threads() -> int:
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else os.cpu_count() or 1


def model_info(session_or_path: Any, name: str | None = None) -> ModelDescription:
    """The description (classes, input size, normalization, members) stored in an exported model (a
    path or a session), checked as a checkpoint's is and against the graph's own input and output
    shapes."""
    session = open_session(session_or_path) if isinstance(session_or_path, (str, os.PathLike)) else session_or_path
    if name is None:
        name = str(session_or_path) if isinstance(session_or_path, (str, os.PathLike)) else "an ONNX model"
    description = ModelDescription.from_onnx(session.get_modelmeta().custom_metadata_map, name)
    if problem := _graph_problem(session, description):
        raise FERCheckpointError(f"{name}: the model's metadata {problem}; the file was edited or is damaged")
    return description


def _graph_problem(session: Any, description: ModelDescription) -> str | None:
    """What the graph's declared shapes contradict in ``description`` (a fixed dimension that differs), or None."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or not outputs:
        return f"describes a classifier, but the graph has {len(inputs)} inputs and {len(outputs)} outputs"
    shape, out = list(inputs[0].shape), list(outputs[0].shape)
    fixed = [d if isinstance(d, int) else None for d in shape]
    size = description.image_size
    if len(shape) != 4 or fixed[1] not in (None, 3) or (not description.resizes_input and {*fixed[2:]} - {None, size}):
        return f"says {size} px faces, but the graph takes inputs of shape {shape}"
    if len(out) != 2 or (isinstance(out[1], int) and out[1] != len(description.classes)):
        return f"names {len(description.classes)} classes, but the graph gives outputs of shape {out}"
    return None


class OnnxClassifier:
    """An exported classifier in one ONNX Runtime session: ``logits(inputs)`` for a preprocessed
    batch (N, 3, S, S) float32, ``info`` for its description (classes, input size, normalization)."""

    def __init__(self, path: str | os.PathLike, threads: int = 0) -> None:
        self.path = Path(path)
        self.session = open_session(self.path, threads)
        self.info = model_info(self.session, str(self.path))
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Logits for preprocessed inputs (N, 3, S, S), run ``MAX_BATCH_INPUTS`` at a time: ONNX
        Runtime keeps its largest batch's activations in its arena, so one huge call would hold
        memory for every input at once."""
        starts = range(0, max(len(inputs), 1), MAX_BATCH_INPUTS)  # an empty batch still runs once
        return np.concatenate(
            [self._run(np.ascontiguousarray(inputs[k : k + MAX_BATCH_INPUTS], dtype=np.float32)) for k in starts]
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One batch through ONNX Runtime; its errors, and outputs that contradict the classes,
        are one line naming the model."""
        try:
            out = self.session.run(None, {self.input_name: batch})[0]
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise FERCheckpointError(
                f"{self.path}: ONNX Runtime could not run this model on inputs of shape {list(batch.shape)} "
                f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); "
                "export it again with `fer export`"
            ) from None
        if out.ndim != 2 or out.shape[1] != len(self.info.classes):
            raise FERCheckpointError(
                f"{self.path}: the model gives outputs of shape {list(out.shape)} for {len(self.info.classes)} "
                "classes; its metadata and graph disagree (export it again with `fer export`)"
            )
        return out

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        return softmax(self.logits(inputs))


def onnx_probabilities(model: str | os.PathLike | OnnxClassifier, inputs: np.ndarray) -> np.ndarray:
    """Softmax probabilities from an exported model (a path, or an open :class:`OnnxClassifier`
    to reuse its session) for preprocessed inputs (N, 3, S, S)."""
    classifier = model if isinstance(model, OnnxClassifier) else OnnxClassifier(model)
    return classifier.probabilities(inputs)


# ---- the user cache of exports -------------------------------------------------------------------


def onnx_cache_dir() -> Path:
    """``$FER_CACHE_DIR/onnx`` (default ``~/.cache/fer_utils/onnx``)."""
    return default_cache_dir() / "onnx"


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (read in 1 MB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_key(files: Sequence[str | os.PathLike]) -> str:
    """The cache key of the export of these checkpoint files: their bytes (weights, temperature
    and description are all in them) and the export format. Reading no weights, it needs no torch."""
    digest = hashlib.sha256(f"{EXPORT_FORMAT}|files".encode())
    for path in files:
        digest.update(file_digest(path).encode())
    return digest.hexdigest()[:24]


def cache_entry(key: str, folder: str | os.PathLike | None = None) -> Path:
    """Where the export of one model lives in the cache (default folder: :func:`onnx_cache_dir`)."""
    return Path(folder if folder is not None else onnx_cache_dir()) / f"fer-{key}.onnx"


def digest_file(path: Path) -> Path:
    """The SHA-256 recorded beside a cache entry when it was written."""
    return path.with_name(path.name + ".sha256")


def verified(path: Path) -> bool:
    """True when the cache entry is the file that was written for it (its recorded SHA-256 matches):
    a truncated file, or another model's file under this name, is never used."""
    try:
        return path.is_file() and digest_file(path).read_text(encoding="ascii").strip() == file_digest(path)
    except OSError:
        return False
