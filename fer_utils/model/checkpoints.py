"""Checkpoints: one ``.safetensors`` file holding the weights and a JSON description of the model.

The JSON (architecture, class names, image size, normalization, training config, metrics,
library versions) lives in the safetensors header, so a checkpoint is a single file that
loads without unpickling anything. Training checkpoints also carry the optimizer state for
resuming. Files are written atomically: a crash mid-save keeps the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fer_utils.core.atomic import atomic_path
from fer_utils.core.errors import FERCheckpointError
from fer_utils.core.metadata import (
    ENSEMBLE_ARCH,
    FORMAT,
    FORMAT_VERSION,
    METADATA_KEY,
    UNREADABLE,
    checkpoint_meta_problem,
    existing_checkpoint,
    member_sizes,
    member_stats,
    parse_checkpoint_meta,
    unreadable_message,
)
from fer_utils.core.metadata import (
    checkpoint_files as checkpoint_files,  # re-exported: the checkpoint API in one place
)
from fer_utils.core.metadata import read_checkpoint_meta as read_checkpoint_meta
from fer_utils.runtime.description import ModelDescription


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``meta`` (the JSON description), model weights, optional optimizer state."""

    meta: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None = None
    path: Path | None = None
    ema_state: dict[str, torch.Tensor] | None = None  # a run's weight average (``last.safetensors`` of EMA runs)

    @property
    def arch(self) -> str:
        return self.meta["arch"]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta["classes"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def description(self) -> ModelDescription:
        """What the model sees (classes, input size, normalization, member sizes), as one value."""
        return ModelDescription.from_meta(self.meta)

    def member_descriptions(self) -> list[ModelDescription]:
        """What each member of an ensemble sees on its own (its architecture, input size and
        normalization; one entry for a single model): how to evaluate one member alone."""
        if self.meta["arch"] != ENSEMBLE_ARCH:
            return [self.description]
        own = zip(self.meta["members"], member_sizes(self.meta), member_stats(self.meta), strict=True)
        return [ModelDescription(m["arch"], self.classes, size, mean, std) for m, size, (mean, std) in own]


def library_versions() -> dict[str, str]:
    """Versions that matter for reproducing a checkpoint."""
    import torchvision

    from fer_utils import __version__

    return {
        "fer_utils": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for key, value in info["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": info["param_groups"]}


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    description: ModelDescription,
    *,
    extra: dict | None = None,
    config: dict | None = None,
    metrics: dict | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    training_state: dict | None = None,
    ema: nn.Module | None = None,
    half: bool = False,
) -> Path:
    """Write model weights and metadata (and optionally optimizer state) to ``path`` atomically.

    ``description`` says what the model sees; ``extra`` adds entries to the metadata (an
    ensemble's ``members``, the training ``data``).

    ``ema`` (a ``torch.optim.swa_utils.AveragedModel``) stores a run's weight average beside the
    weights it trains, so resuming continues both. ``half`` stores weights as float16 (half the
    size; loaded back as float32).
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        tensors[f"model.{k}"] = v.half() if half and v.is_floating_point() else v.clone()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **description.to_meta(),
        **(extra or {}),
        "config": config or {},
        "metrics": metrics or {},
        "versions": library_versions(),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if optimizer is not None:
        opt_tensors, opt_info = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
        meta["optimizer"] = opt_info
    if training_state is not None:
        meta["training_state"] = training_state
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous().clone() for k, v in ema.state_dict().items()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    return path


def _read_safetensors(path: str | os.PathLike) -> tuple[Path, dict[str, str], dict[str, torch.Tensor]]:
    """(path, header metadata, all tensors) of a safetensors file, or a FERCheckpointError."""
    from safetensors import safe_open

    path = existing_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    except UNREADABLE:
        raise FERCheckpointError(unreadable_message(path)) from None
    return path, header, tensors


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load and validate a checkpoint; FERCheckpointError explains missing, truncated or foreign files."""
    path, header, tensors = _read_safetensors(path)
    meta = parse_checkpoint_meta(path, header)
    model_state = {
        k[6:]: v.float() if v.dtype == torch.float16 else v for k, v in tensors.items() if k.startswith("model.")
    }
    optimizer_state = None
    if "optimizer" in meta:
        optimizer_state = _unflatten_optimizer(
            {k: v for k, v in tensors.items() if k.startswith("optimizer.")}, meta["optimizer"]
        )
    ema_state = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")} or None
    return Checkpoint(meta, model_state, optimizer_state, path, ema_state)


def update_checkpoint_metadata(
    path: str | os.PathLike, updates: dict[str, Any], out: str | os.PathLike | None = None
) -> Path:
    """Merge ``updates`` into a checkpoint's JSON metadata, rewriting the file atomically (or
    writing the result to ``out``, leaving ``path`` as it was); the merged metadata is validated
    like a loaded file's, so no update can write a checkpoint that would not load."""
    from safetensors.torch import save_file

    path, header, tensors = _read_safetensors(path)
    meta = {**parse_checkpoint_meta(path, header), **updates}
    problem = checkpoint_meta_problem(meta)
    if problem:
        raise FERCheckpointError(f"{path}: refusing to write metadata that {problem}")
    target = Path(out) if out is not None else path
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    return target


def git_commit(folder: str | os.PathLike = ".") -> str | None:
    """The git commit of ``folder`` (with ``-dirty`` when it has uncommitted changes), or None."""
    import subprocess

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def checkpoint_name(checkpoint: Checkpoint) -> str:
    """How reports name a model: its file, or ``a + b + c`` for an ensemble built in memory."""
    if checkpoint.path is not None:
        return str(checkpoint.path)
    return " + ".join(str(m.get("source")) for m in checkpoint.meta.get("members", []))
