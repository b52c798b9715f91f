"""What a model sees, as one typed value: its classes, input side, normalization, the input size of
each ensemble member, and the test-time augmentation views. Parsed and checked once, from a
checkpoint's metadata or an ONNX file's, then passed whole to preprocessing, evaluation, the ONNX
export and the classifier, whatever runs the model (PyTorch or ONNX Runtime). Torch-free."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fer_utils.core.errors import FERCheckpointError
from fer_utils.core.metadata import MAX_IMAGE_SIZE, description_problem, member_sizes
from fer_utils.runtime.preprocess import (
    MAX_BATCH_INPUTS,
    checked_tta,
    face_inputs,
    faces_per_batch,
    softmax,
    tta_inputs,
)

MAX_MEMBERS = 64
"""The most members a model file may say it has."""

ONNX_INPUT = "N x 3 x S x S float32: gray face scaled 0..1, repeated to 3 channels, normalized (x - mean) / std"


@dataclass(frozen=True)
class ModelDescription:
    """What a model takes and gives: ``classes`` in output order, the input side ``image_size``,
    the normalization ``mean``/``std`` it was trained with, each member's input size
    (``member_sizes``; one entry for a single model) and the ``tta`` views inference averages.
    Build it with :meth:`from_meta` or :meth:`from_onnx`, which check it; change TTA with
    :meth:`with_tta`."""

    arch: str
    classes: tuple[str, ...]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    member_sizes: tuple[int, ...] = ()
    tta: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "member_sizes", tuple(int(s) for s in self.member_sizes) or (int(self.image_size),))
        checked_tta(self.tta)

    @classmethod
    def from_meta(cls, meta: dict[str, Any], tta: str = "none") -> ModelDescription:
        """The description in a checkpoint's metadata (already checked when the file was read)."""
        return cls(
            str(meta["arch"]),
            tuple(meta["classes"]),
            int(meta["image_size"]),
            tuple(meta["mean"]),
            tuple(meta["std"]),
            tuple(member_sizes(meta)),
            tta,
        )

    @classmethod
    def from_onnx(cls, props: dict[str, str], name: str) -> ModelDescription:
        """The description an exported model stores in its metadata (:meth:`onnx_props`), checked
        as a checkpoint's is; a missing or damaged entry is one error naming the file."""
        try:
            classes, mean, std = (json.loads(props[key]) for key in ("classes", "mean", "std"))
            image_size = int(props["image_size"])
            members = int(props.get("members", 1))
            sizes = [int(v) for v in json.loads(props.get("member_sizes", "[]"))]
        except (KeyError, ValueError, TypeError) as err:
            raise FERCheckpointError(
                f"{name}: an ONNX model without the course's metadata ({type(err).__name__}: {err}); only files "
                "written by `fer export` (or the Predictor's cache) say which classes and preprocessing they expect"
            ) from None
        problem = description_problem(classes, image_size, mean, std)
        sizes = sizes or [image_size] * members
        if problem is None and not (
            1 <= members <= MAX_MEMBERS and len(sizes) == members and all(16 <= s <= MAX_IMAGE_SIZE for s in sizes)
        ):
            problem = (
                f"says members {members} and member sizes {sizes[:10]}; "
                f"they must be 1 to {MAX_MEMBERS}, 16 to {MAX_IMAGE_SIZE} px"
            )
        if problem:
            raise FERCheckpointError(f"{name}: the model's metadata {problem}; the file was edited or is damaged")
        return cls(props.get("arch") or "", tuple(classes), image_size, tuple(mean), tuple(std), tuple(sizes))

    @property
    def members(self) -> int:
        """How many models are averaged (1 for a single model)."""
        return len(self.member_sizes)

    @property
    def resizes_input(self) -> bool:
        """True when the model enlarges its input itself (an ensemble of members of several input
        sizes takes any side), so its TTA crops are fed at their own size."""
        return any(size != self.image_size for size in self.member_sizes)

    def with_tta(self, tta: str) -> ModelDescription:
        """The same description with other test-time augmentation views."""
        return dataclasses.replace(self, tta=checked_tta(tta))

    def to_meta(self) -> dict[str, Any]:
        """The entries a checkpoint's metadata holds for this description (ensemble members are
        described by the checkpoint's own ``members`` list)."""
        return {
            "arch": self.arch,
            "classes": list(self.classes),
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything it says, as plain JSON values (reports, the web demo's model.json)."""
        return {**self.to_meta(), "members": self.members, "member_sizes": list(self.member_sizes)}

    def onnx_props(self) -> dict[str, str]:
        """The key/value pairs an export stores in its ONNX file (read back by :meth:`from_onnx`)."""
        return {
            "classes": json.dumps(list(self.classes)),
            "image_size": str(self.image_size),
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "arch": self.arch,
            "members": str(self.members),
            "member_sizes": json.dumps(list(self.member_sizes)),
            "input": ONNX_INPUT,
            "output": "logits; softmax for probabilities",
        }

    def inputs(self, faces48: np.ndarray) -> np.ndarray:
        """The normalized model input (N, 3, S, S) for (N, 48, 48) uint8 faces (no TTA)."""
        return face_inputs(faces48, self.image_size, self.mean, self.std)

    def views(self, faces48: np.ndarray) -> np.ndarray:
        """The TTA views (V, N, 3, S, S) of (N, 48, 48) uint8 faces."""
        return tta_inputs(faces48, self.image_size, self.mean, self.std, self.tta, keep_crop_size=self.resizes_input)

    def view_batches(self, faces48: np.ndarray, max_inputs: int = MAX_BATCH_INPUTS) -> Iterator[np.ndarray]:
        """The faces' TTA views in bounded batches, each (V, B, 3, S, S) with V x B at most
        ``max_inputs``: memory does not grow with the number of faces or views."""
        step = faces_per_batch(self.tta, max_inputs)
        for start in range(0, len(faces48), step):
            yield self.views(faces48[start : start + step])

    def probabilities(
        self, faces48: np.ndarray, logits: Callable[[np.ndarray], np.ndarray], max_inputs: int = MAX_BATCH_INPUTS
    ) -> np.ndarray:
        """Class probabilities (N, C) for (N, 48, 48) uint8 faces: ``logits`` (any runtime) run on
        each batch of views, softmax, averaged over the views. The one TTA loop of the library."""
        out = [np.zeros((0, len(self.classes)), np.float32)]
        for views in self.view_batches(faces48, max_inputs):
            v, b = views.shape[:2]
            out.append(softmax(logits(views.reshape(v * b, *views.shape[2:]))).reshape(v, b, -1).mean(axis=0))
        return np.concatenate(out).astype(np.float32)
