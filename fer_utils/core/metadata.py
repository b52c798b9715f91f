"""What a checkpoint says about itself, read without loading its weights (or importing torch).

A ``.safetensors`` checkpoint stores its description (architecture, classes, input size,
normalization, temperature, ensemble members) as JSON in the file's header. The Predictor, the
ONNX cache and the CLI read it here, validated, before anything heavy is loaded.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from fer_utils.core.errors import FERCheckpointError

TEMPERATURE_RANGE = (0.05, 20.0)
"""The temperatures a checkpoint may carry (and the fit searches): outside it, something is broken."""

FORMAT = "fer_utils.checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "fer_utils"
UNREADABLE = (SafetensorError, OSError, ValueError, RuntimeError)
"""What safetensors raises for truncated, empty or foreign files."""


def member_sizes(meta: dict[str, Any]) -> list[int]:
    """The input size of each member of the model ``meta`` describes (one entry for a single
    model): from a checkpoint's ``members`` or an export's ``member_sizes``."""
    size = int(meta["image_size"])
    if "member_sizes" in meta:
        return [int(s) for s in meta["member_sizes"]]
    members = meta.get("members")
    if isinstance(members, list) and members:
        return [int(m.get("image_size", size)) for m in members]
    return [size]


def member_stats(meta: dict[str, Any]) -> list[tuple[list[float], list[float]]]:
    """The normalization (mean, std) each member of the model ``meta`` describes was trained with
    (one entry for a single model); members that do not say share the model's. A member
    evaluated on its own needs its own: a timm Lite1 member uses ImageNet's statistics."""
    own = (list(meta["mean"]), list(meta["std"]))
    members = meta.get("members")
    if isinstance(members, list) and members:
        return [(list(m.get("mean", own[0])), list(m.get("std", own[1]))) for m in members]
    return [own]


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read only the JSON description of a checkpoint (fast: no weights are loaded)."""
    from safetensors import safe_open

    path = existing_checkpoint(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
    except UNREADABLE:
        raise FERCheckpointError(unreadable_message(path)) from None
    return parse_checkpoint_meta(path, header)


def existing_checkpoint(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise FERCheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise FERCheckpointError(
            f"{path}: is a folder; pass the .safetensors file inside it (e.g. {path}/best.safetensors)"
        )
    return path


def unreadable_message(path: Path) -> str:
    return (
        f"{path}: not a readable checkpoint (not a safetensors file, or a truncated one). "
        "Use a .safetensors file written by `fer train`, or an .onnx file written by `fer export`"
    )


def parse_checkpoint_meta(path: Path, header: dict[str, str]) -> dict[str, Any]:
    if METADATA_KEY not in header:
        raise FERCheckpointError(
            f"{path}: a safetensors file, but not a fer_utils checkpoint (no '{METADATA_KEY}' "
            "metadata); load plain weights with build_model(pretrained=FILE)"
        )
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError:
        raise FERCheckpointError(f"{path}: checkpoint metadata is not valid JSON") from None
    missing = [k for k in ("arch", "classes", "image_size", "mean", "std") if k not in meta]
    if meta.get("format") != FORMAT or missing:
        raise FERCheckpointError(f"{path}: checkpoint metadata lacks {missing or 'the format tag'}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise FERCheckpointError(
            f"{path}: written by a newer fer_utils (format {meta['format_version']}); upgrade fer_utils"
        )
    problem = checkpoint_meta_problem(meta)
    if problem:
        raise FERCheckpointError(f"{path}: checkpoint metadata {problem}; the file was edited or is damaged")
    return meta


ENSEMBLE_ARCH = "ensemble"
"""The ``arch`` of a checkpoint that packs several models; its ``members`` say how to build each."""

MAX_IMAGE_SIZE = 1024
"""The largest model input side a checkpoint may declare or a TrainConfig ask for."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


MAX_CLASSES = 1000
MAX_CLASS_NAME = 64
"""Bounds on a model's class names: a model file is someone else's text, printed and written to files."""


def description_problem(classes: Any, image_size: Any, mean: Any, std: Any) -> str | None:
    """The one check of what every model format (``.safetensors``, ensembles, ``.onnx``, the web
    demo's model.json) says about its inputs and outputs, before anything is allocated for it:
    class names unique, non-empty, printable and bounded; an input size within ``MAX_IMAGE_SIZE``;
    a finite normalization with std > 0. Returns what is wrong, or None."""
    if not (isinstance(image_size, int) and not isinstance(image_size, bool) and 16 <= image_size <= MAX_IMAGE_SIZE):
        return f"says image_size {image_size!r}; it must be a whole number of pixels from 16 to {MAX_IMAGE_SIZE}"
    if not (
        isinstance(classes, list) and 2 <= len(classes) <= MAX_CLASSES and all(isinstance(c, str) for c in classes)
    ):
        return f"says classes {str(classes)[:200]!r}; it must be a list of 2 to {MAX_CLASSES} class names"
    bad = [c for c in classes if not (c.strip() and c.isprintable() and len(c) <= MAX_CLASS_NAME)]
    if bad:
        return (
            f"has the class name {bad[0][:MAX_CLASS_NAME]!r}; each must be printable text of 1 to {MAX_CLASS_NAME} "
            "characters"
        )
    if len(set(classes)) != len(classes):
        return f"repeats a class name in {classes!r}"
    for key, values in (("mean", mean), ("std", std)):
        if not (isinstance(values, list) and len(values) in (1, 3) and all(_is_number(v) for v in values)):
            return f"says {key} {str(values)[:100]!r}; it must be 1 or 3 finite numbers"
    if not all(v > 0 for v in std):
        return f"says std {std!r}; every value must be positive"
    return None


def checkpoint_meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with the fields inference trusts (never trust a file's word blindly), or None."""
    size, channels = meta["image_size"], meta.get("in_channels", 3)  # older files say 3
    if problem := description_problem(meta["classes"], size, meta["mean"], meta["std"]):
        return problem
    if channels != 3:
        return f"says in_channels {channels!r}; the course's models take 3 channels (the gray face repeated)"
    if not isinstance(meta["arch"], str):
        return f"says arch {meta['arch']!r}; it must be an architecture name"
    if "temperature" in meta:
        low, high = TEMPERATURE_RANGE
        value = meta["temperature"]
        if not (_is_number(value) and low <= value <= high):
            return f"says temperature {value!r}; it must be a number from {low} to {high}"
    if meta["arch"] == ENSEMBLE_ARCH:
        members = meta.get("members")
        if not (isinstance(members, list) and members and all(isinstance(m, dict) for m in members)):
            return "is an ensemble without a list of members"
        if not all(isinstance(m.get("arch"), str) and m.get("arch") != ENSEMBLE_ARCH for m in members):
            return "lists an ensemble member without a valid arch"
        sizes = [m.get("image_size", size) for m in members]
        if not all(isinstance(s, int) and not isinstance(s, bool) and size <= s <= MAX_IMAGE_SIZE for s in sizes):
            return f"lists member image sizes {sizes!r}; each must be a whole number from {size} to {MAX_IMAGE_SIZE}"
        for i, m in enumerate(members):
            if problem := description_problem(
                meta["classes"], size, m.get("mean", meta["mean"]), m.get("std", meta["std"])
            ):
                return f"member {i} {problem}"
    return None


CheckpointSource = str | os.PathLike | Sequence[str | os.PathLike]
"""One checkpoint file, or several to average as an ensemble."""


def checkpoint_files(source: CheckpointSource) -> list[Path]:
    """The file(s) a CheckpointSource names: the inputs an output path must never replace."""
    return [Path(source)] if isinstance(source, (str, os.PathLike)) else [Path(s) for s in source]
