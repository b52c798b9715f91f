"""The classifier behind a Predictor: face crops in, class probabilities out, in ONNX Runtime
(on the CPU, from an export kept in the user cache and found by the checkpoint files' hash, so a
process that only predicts never imports torch) or in PyTorch (GPUs, Grad-CAM, ``runtime="torch"``)."""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_utils.core.errors import FERConfigError, install_hint
from fer_utils.core.metadata import CheckpointSource, checkpoint_files, read_checkpoint_meta
from fer_utils.data.images import DEFAULT_FACE_SIZE, square_resize
from fer_utils.faces.detection import FaceBox, crop_face
from fer_utils.runtime.description import ModelDescription
from fer_utils.runtime.onnx import OnnxClassifier, cache_entry, checkpoint_key, exporter_missing, verified

if TYPE_CHECKING:
    import torch

    from fer_utils.model.checkpoints import Checkpoint

RUNTIMES = ("auto", "onnx", "torch")
"""How the classifier runs: ``onnx`` (ONNX Runtime, CPU; exported once and cached), ``torch``, or
``auto``: ONNX Runtime when it is installed, no GPU is asked for and the model is exported or can
be (it needs no torch and is the faster CPU runtime; benchmarks/bench_deploy.py), else PyTorch: an
install without the exporter (Colab, the ``course`` extra alone) predicts in PyTorch. Grad-CAM
always uses PyTorch."""


def has_onnxruntime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def training_size_faces(faces: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 face crops of any size as the (N, 48, 48) stack the models were trained on."""
    if not len(faces):
        return np.zeros((0, DEFAULT_FACE_SIZE, DEFAULT_FACE_SIZE), np.uint8)
    return np.stack([square_resize(np.ascontiguousarray(f, dtype=np.uint8), DEFAULT_FACE_SIZE) for f in faces])


class FaceClassifier:
    """Class probabilities for face crops from one model (a checkpoint, an ensemble or an export).
    Thread-safe: threads share one ONNX Runtime session and one lazily loaded PyTorch model."""

    def __init__(
        self,
        model: torch.nn.Module,
        checkpoint: Checkpoint,
        tta: str = "none",
        device: str | torch.device | None = None,
        runtime: str = "torch",
        threads: int = 0,
    ) -> None:
        from fer_utils.model.devices import model_device, resolve_device

        self._setup(checkpoint.description.with_tta(tta), runtime, threads)
        self.device = model_device(model) if device is None else resolve_device(device)
        self._model: Any = model.to(self.device).eval()
        self._checkpoint: Checkpoint | None = checkpoint
        self.sources = [checkpoint.path] if checkpoint.path is not None else []
        if runtime == "auto":  # ONNX Runtime needs an export, made here on first use: only with the exporter
            runtime = "onnx" if self.device.type == "cpu" and has_onnxruntime() and not exporter_missing() else "torch"
        if runtime == "onnx" and self.device.type != "cpu":
            raise FERConfigError(f"runtime 'onnx' runs on the CPU; use runtime 'torch' on {self.device}")
        self.runtime = runtime
        self._cache_key: str | None = None  # set by from_checkpoint: the export is found by the files' hash

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names, in the order of the model's outputs."""
        return self.description.classes

    def _setup(self, description: ModelDescription, runtime: str, threads: int) -> None:
        if runtime not in RUNTIMES:
            raise FERConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        self.description = description
        self.runtime, self.threads = runtime, threads
        self._onnx: OnnxClassifier | None = None
        self._lock = threading.RLock()  # guards lazy loading, which nests

    @classmethod
    def from_onnx(
        cls, path: str | os.PathLike, tta: str = "none", threads: int = 0, sources: Sequence[Path] = ()
    ) -> FaceClassifier:
        """An exported model (``fer export`` or the cache) in ONNX Runtime; torch is never imported.
        ``sources``: the checkpoints it was exported from, which Grad-CAM loads on demand."""
        onnx = OnnxClassifier(path, threads)
        self = cls.__new__(cls)
        self._setup(onnx.info.with_tta(tta), "onnx", threads)
        self.device, self._model, self._checkpoint, self._onnx = None, None, None, onnx
        self.sources = list(sources) or [Path(path)]
        return self

    @classmethod
    def from_checkpoint(
        cls,
        path: CheckpointSource,
        tta: str = "none",
        device: str | torch.device = "auto",
        runtime: str = "auto",
        threads: int = 0,
    ) -> FaceClassifier:
        """Checkpoint file(s) averaged as an ensemble, or an exported ``.onnx`` file. With runtime
        ``auto``/``onnx`` on the CPU, the export cached for these exact files is used without
        importing torch; the first time, the model is loaded, exported, checked and cached."""
        files = checkpoint_files(path)
        if runtime not in RUNTIMES:
            raise FERConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if any(f.suffix.lower() == ".onnx" for f in files):
            if len(files) > 1 or runtime == "torch":
                raise FERConfigError(
                    f"{files[0]}: an exported ONNX model runs alone in ONNX Runtime; pass the .safetensors "
                    "checkpoints for runtime 'torch' or for an ensemble of several files"
                )
            return cls.from_onnx(files[0], tta, threads)
        key: str | None = None  # the files' hash, once computed: the cached export's name
        if runtime == "onnx" or (runtime == "auto" and str(device) in ("auto", "cpu") and has_onnxruntime()):
            for f in files:
                read_checkpoint_meta(f)  # a missing, damaged or foreign file fails here, in one line
            key = checkpoint_key(files)
            if verified(entry := cache_entry(key)):
                return cls.from_onnx(entry, tta, threads, sources=files)
        if importlib.util.find_spec("torch") is None:
            raise FERConfigError(
                f"{files[0]}: this install has no torch, so it runs exported models only; export this checkpoint "
                "where the course is installed (`fer export --checkpoint FILE --out model.onnx`) and pass the "
                f".onnx file, or install training support ({install_hint('course,export')})"
            )
        from fer_utils.model.assembly import load_model

        model, checkpoint = load_model(files if len(files) > 1 else files[0])
        classifier = cls(model, checkpoint, tta, device, runtime, threads)
        classifier.sources = files
        if classifier.runtime == "onnx":
            classifier._cache_key = key or checkpoint_key(files)
        return classifier

    @property
    def model(self) -> torch.nn.Module:
        """The PyTorch model (Grad-CAM, runtime ``torch``): loaded from the checkpoint on first use
        when this classifier was opened from its ONNX export."""
        with self._lock:
            if self._model is None:
                if not self.sources or any(Path(s).suffix.lower() == ".onnx" for s in self.sources):
                    raise FERConfigError(
                        f"{self.name}: an exported ONNX model has no PyTorch graph for Grad-CAM; "
                        "use the .safetensors checkpoint it was exported from"
                    )
                from fer_utils.model.assembly import load_model
                from fer_utils.model.devices import resolve_device

                model, self._checkpoint = load_model(self.sources if len(self.sources) > 1 else self.sources[0])
                self.device = resolve_device("cpu")
                self._model = model.eval()
        return self._model

    @property
    def checkpoint(self) -> Checkpoint:
        """The loaded checkpoint behind :attr:`model` (loaded with it, on first use)."""
        if self._checkpoint is None:
            self.model  # noqa: B018 - loads model and checkpoint together
        return self._checkpoint

    @property
    def name(self) -> str:
        """How reports name the model: its file(s), or the in-memory ensemble's members."""
        if self.sources:
            return " + ".join(str(s) for s in self.sources)
        from fer_utils.model.checkpoints import checkpoint_name

        return checkpoint_name(self._checkpoint)

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """The model's logits for a preprocessed batch, in this classifier's runtime."""
        if self.runtime == "torch":
            import torch

            with torch.inference_mode():
                return self.model(torch.from_numpy(inputs).to(self.device)).float().cpu().numpy()
        with self._lock:  # one export and one session, however many threads ask at once
            if self._onnx is None:
                from fer_utils.model.export import cached_onnx

                model = self.model
                self._onnx = OnnxClassifier(cached_onnx(model, self.checkpoint, key=self._cache_key), self.threads)
        return self._onnx.logits(inputs)

    def inputs(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """The normalized model input (N, 3, S, S) float32 for uint8 face crops of any size
        (each first resized to 48x48 like the training faces)."""
        return self.description.inputs(training_size_faces(faces))

    def input_tensor(self, faces: Sequence[np.ndarray]) -> torch.Tensor:
        """:meth:`inputs` as a torch tensor on this classifier's device (Grad-CAM, notebooks)."""
        import torch

        return torch.from_numpy(self.inputs(faces)).to(self.device or "cpu")

    def probabilities(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (N, C) for uint8 face crops (any size; resized like the training data),
        averaged over the test-time augmentation views, in bounded batches (memory does not grow
        with the number of faces)."""
        return self.description.probabilities(training_size_faces(faces), self.logits)

    def gradcam(
        self,
        faces: Sequence[np.ndarray],
        target_classes: Sequence[int] | None = None,
        method: str = "layercam",
        layer: str = "fine",
    ) -> np.ndarray:
        """Class-activation maps (N, S, S) for face crops, for ``target_classes`` (default: the
        predicted ones); ``method`` and ``layer`` as in :func:`fer_utils.model.gradcam.gradcam_maps`."""
        from fer_utils.model.gradcam import gradcam_maps

        return gradcam_maps(self.model, self.input_tensor(faces), target_classes, method=method, layer=layer)


# ---- the one chain from a picture to classified faces, for photos and video frames alike ----


def located_faces(
    gray: np.ndarray,
    detect: Callable[[np.ndarray], list[FaceBox]],
    refine: Callable[[np.ndarray, FaceBox], FaceBox] | None = None,
    align: bool = True,
) -> list[FaceBox]:
    """The faces ``detect`` finds, numbered left to right; when aligning, each face's landmarks
    measured again with ``refine`` (the eye line a detector gives first lags behind a tilted head)."""
    boxes = sorted(detect(gray), key=lambda box: (box.x, box.y))
    if align and refine is not None:
        boxes = [refine(gray, box) for box in boxes]
    return boxes


def classified_crops(
    gray: np.ndarray,
    boxes: Sequence[FaceBox],
    classify: Callable[[Sequence[np.ndarray]], np.ndarray],
    align: bool = True,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Each face cut out as FER2013 faces were cut (levelled when ``align``) and its class
    probabilities (N, C) from ``classify``."""
    crops = [crop_face(gray, box, align=align) for box in boxes]
    return crops, classify(crops) if crops else np.zeros((0, 0), np.float32)


def class_dict(classes: Sequence[str], values: np.ndarray) -> dict[str, float]:
    """Per-class values (probabilities) keyed by class name, as results report them."""
    return {c: float(v) for c, v in zip(classes, values, strict=True)}
