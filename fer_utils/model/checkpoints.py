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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fer_utils.core.architectures import DEFAULT_DROPOUT
from fer_utils.core.atomic import atomic_path, check_outputs
from fer_utils.core.errors import FERCheckpointError
from fer_utils.core.metadata import (
    ENSEMBLE_ARCH,
    FORMAT,
    FORMAT_VERSION,
    METADATA_KEY,
    UNREADABLE,
    CheckpointSource,
    checkpoint_meta_problem,
    existing_checkpoint,
    member_sizes,
    member_stats,
    parse_checkpoint_meta,
    resizes_input,
    unreadable_message,
)
from fer_utils.core.metadata import (
    checkpoint_files as checkpoint_files,  # re-exported: the checkpoint API in one place
)
from fer_utils.core.metadata import read_checkpoint_meta as read_checkpoint_meta
from fer_utils.data.images import DEFAULT_FACE_SIZE
from fer_utils.model.calibration import TemperatureScaled, base_model


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


@dataclass
class ModelCard:
    """What inference needs to use a model the way it was trained."""

    arch: str
    classes: tuple[str, ...]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_meta(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "classes": list(self.classes),
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            **self.extra,
        }


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
    card: ModelCard,
    *,
    config: dict | None = None,
    metrics: dict | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    training_state: dict | None = None,
    ema: nn.Module | None = None,
    half: bool = False,
) -> Path:
    """Write model weights and metadata (and optionally optimizer state) to ``path`` atomically.

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
        **card.to_meta(),
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
    except UNREADABLE as err:
        raise FERCheckpointError(unreadable_message(path, err)) from None
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


def _check_fit(own: dict[str, torch.Tensor], checkpoint: Checkpoint, advice: str) -> None:
    """FERCheckpointError unless ``own`` (a state dict) has exactly the checkpoint's tensor names and shapes."""
    missing = [k for k in own if k not in checkpoint.model_state]
    unexpected = [k for k in checkpoint.model_state if k not in own]
    wrong = [k for k in own if k in checkpoint.model_state and own[k].shape != checkpoint.model_state[k].shape]
    if missing or unexpected or wrong:
        raise FERCheckpointError(
            f"{checkpoint.path}: weights do not fit this model (checkpoint arch {checkpoint.arch}, "
            f"{len(checkpoint.classes)} classes): {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} of another shape (e.g. {(missing + unexpected + wrong)[:2]}). {advice}"
        )


def load_model_weights(model: nn.Module, checkpoint: Checkpoint) -> None:
    """Copy checkpoint weights into ``model``, explaining any architecture or class mismatch."""
    _check_fit(model.state_dict(), checkpoint, "Build the model from the checkpoint (model_from_checkpoint) instead")
    bad = [k for k, v in checkpoint.model_state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise FERCheckpointError(
            f"{checkpoint.path}: {len(bad)} weight tensors hold NaN or infinite values (e.g. {bad[0]}); "
            "the training run that wrote it diverged. Retrain with a lower learning rate"
        )
    model.load_state_dict(checkpoint.model_state)


def _dropout_of(meta: dict[str, Any]) -> float:
    """The dropout a checkpoint (or ensemble member) was built with: its config's, else its own
    field, else the default every checkpoint before the field existed used."""
    return float(meta.get("config", {}).get("dropout", meta.get("dropout", DEFAULT_DROPOUT)))


def _member_description(meta: dict[str, Any], source: str) -> dict[str, Any]:
    """What rebuilding one ensemble member needs, plus where it came from and how it scored."""
    return {
        "arch": meta["arch"],
        "dropout": _dropout_of(meta),
        "image_size": int(meta["image_size"]),
        "mean": list(meta["mean"]),
        "std": list(meta["std"]),
        "source": meta.get("source", source),
        "evaluation": meta.get("evaluation", {}),
        "config": meta.get("config", {}),
    }


def _build_described(meta: dict[str, Any]) -> nn.Module:
    """An untrained model of the architecture ``meta`` describes (a single model or an ensemble)."""
    from fer_utils.model.factory import Ensemble, build_model

    def single(m: dict[str, Any]) -> nn.Module:
        return build_model(
            m["arch"],
            num_classes=len(meta["classes"]),
            pretrained=False,
            dropout=_dropout_of(m),
        )

    if meta["arch"] == ENSEMBLE_ARCH:
        sizes = member_sizes(meta) if resizes_input(meta) else None
        return Ensemble([single(m) for m in meta["members"]], sizes, member_norms(meta))
    return single(meta)


def member_norms(meta: dict[str, Any]) -> list:
    """For each member of the ensemble ``meta`` describes, how to turn the ensemble's normalized
    input into its own (see :class:`fer_utils.model.factory.Ensemble`)."""
    from fer_utils.model.factory import normalization_change

    into = (meta["mean"], meta["std"])
    return [normalization_change(into, own) for own in member_stats(meta)]


def _built_to_fit(checkpoint: Checkpoint) -> nn.Module:
    """The model the metadata describes, built on PyTorch's meta device first (no memory, no
    random initialization) and checked against the weights' names and shapes, so an edited
    architecture is refused before gigabytes are allocated; then given real (empty) storage for
    the weights to fill. Backends that cannot build there are built the ordinary way."""
    try:
        with torch.device("meta"):
            model = _build_described(checkpoint.meta)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return _build_described(checkpoint.meta)
    state = model.state_dict()
    _check_fit(state, checkpoint, "The metadata describes another model than the weights: edited or damaged")
    if any(name not in state for name, _ in model.named_buffers()):  # not in the file: would stay empty
        return _build_described(checkpoint.meta)
    return model.to_empty(device="cpu")


def model_from_checkpoint(
    path: str | os.PathLike, expect_classes: tuple[str, ...] | None = None
) -> tuple[nn.Module, Checkpoint]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model in eval mode, checkpoint)."""
    checkpoint = load_checkpoint(path)
    if expect_classes is not None and tuple(expect_classes) != checkpoint.classes:
        raise FERCheckpointError(
            f"{checkpoint.path}: trained for classes {', '.join(checkpoint.classes)}, but the data "
            f"has {', '.join(expect_classes)}; use a checkpoint trained on the same class list"
        )
    model = _built_to_fit(checkpoint)
    load_model_weights(model, checkpoint)
    if "temperature" in checkpoint.meta:  # fitted by `fer calibrate`: every caller gets calibrated probabilities
        model = TemperatureScaled(model, checkpoint.meta["temperature"])
    return model.eval(), checkpoint


def load_model(source: CheckpointSource, expect_classes: tuple[str, ...] | None = None) -> tuple[nn.Module, Checkpoint]:
    """One checkpoint (a single model or a packed ensemble), or several averaged as an ensemble.

    Members must share the classes; otherwise FERCheckpointError names the first member that
    differs. Members of different input sizes make an ensemble that takes the 48x48 face and
    enlarges it for each member; members of another normalization get the input renormalized:
    each sees exactly its own preprocessing.
    """
    from fer_utils.model.factory import Ensemble

    paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not paths:
        raise FERCheckpointError("no checkpoint given; pass one file, or several to average as an ensemble")
    loaded = [model_from_checkpoint(p, expect_classes) for p in paths]
    if len(loaded) == 1:
        return loaded[0]
    first = loaded[0][1]
    members: list[nn.Module] = []
    described: list[dict[str, Any]] = []
    for model, checkpoint in loaded:
        if "temperature" in checkpoint.meta:
            print(
                f"note: {checkpoint.path}: its temperature ({checkpoint.meta['temperature']}) was fitted for it alone "
                "and is not used inside an ensemble; fit one for the ensemble with `fer calibrate`"
            )
        model = base_model(model)
        if checkpoint.meta.get("classes") != first.meta.get("classes"):
            raise FERCheckpointError(
                f"{checkpoint.path}: its classes ({checkpoint.meta.get('classes')}) differ from {first.path}'s "
                f"({first.meta.get('classes')}); ensemble members must share the classes, in the same order"
            )
        if isinstance(model, Ensemble):  # flatten, so every model counts once
            members += list(model.members)
            described += _members_described(checkpoint.meta)
        else:
            members.append(model)
            described.append(_member_description(checkpoint.meta, str(checkpoint.path)))
    return _assembled(members, described, first.meta)


def _members_described(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Each member's description in an ensemble's metadata, completed by the ensemble's own input
    size and normalization where an older file left them out."""
    own = {key: meta[key] for key in ("image_size", "mean", "std")}
    return [{**own, **m} for m in meta["members"]]


def _assembled(
    members: list[nn.Module], described: list[dict[str, Any]], first: dict[str, Any]
) -> tuple[nn.Module, Checkpoint]:
    """An ensemble of ``members`` (described one by one) and its metadata: the classes of
    ``first`` (the first source's metadata). Members must share the classes; input sizes and
    normalizations may differ: the ensemble takes the stored 48x48 face normalized as its first
    member wants it, and enlarges and renormalizes it for each other member (``Ensemble``'s
    ``sizes`` and ``norms``)."""
    from fer_utils.model.factory import Ensemble

    sizes = [int(m["image_size"]) for m in described]
    mixed = len(set(sizes)) > 1
    if mixed and min(sizes) < DEFAULT_FACE_SIZE:
        raise FERCheckpointError(
            f"ensemble members of different input sizes must each take at least {DEFAULT_FACE_SIZE} px "
            f"(the stored face size), got {sizes}"
        )
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "classes": first.get("classes"),
        "mean": described[0]["mean"],
        "std": described[0]["std"],
        "image_size": DEFAULT_FACE_SIZE if mixed else sizes[0],
        "arch": ENSEMBLE_ARCH,
        "members": described,
    }
    ensemble = Ensemble(members, sizes if mixed else None, member_norms(meta)).eval()
    return ensemble, Checkpoint(meta, ensemble.state_dict(), None, None)


def checkpoint_name(checkpoint: Checkpoint) -> str:
    """How reports name a model: its file, or ``a + b + c`` for an ensemble built in memory."""
    if checkpoint.path is not None:
        return str(checkpoint.path)
    return " + ".join(str(m.get("source")) for m in checkpoint.meta.get("members", []))


def save_ensemble(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    half: bool = False,
    overwrite: bool = False,
    select: Sequence[int] | None = None,
) -> Path:
    """Pack several checkpoints into one ensemble checkpoint file (weights of all members, one
    description), so an ensemble ships and loads like a single model. An ensemble among the
    sources counts as its members; ``select`` keeps only the members at these positions (counted
    from 0 over every source's members in order), in that order: e.g. three of a shipped six, or
    one member swapped for a new run. ``half`` stores float16 weights (half the size; loaded back
    as float32). ``out`` never replaces a source, nor an existing file unless ``overwrite``."""
    from fer_utils.model.factory import Ensemble

    if not sources:
        raise FERCheckpointError("an ensemble needs member checkpoints; none given")
    check_outputs({"ensemble checkpoint": out}, inputs=sources, overwrite=overwrite)
    model, checkpoint = load_model(list(sources))
    model = base_model(model)  # a single ensemble file's temperature is for all of its members
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    described = (
        _members_described(checkpoint.meta)
        if isinstance(model, Ensemble)
        else [_member_description(checkpoint.meta, str(checkpoint.path))]
    )
    if select is not None:
        wrong = [i for i in select if not 0 <= i < len(members)]
        if wrong or len(set(select)) != len(select):
            raise FERCheckpointError(
                f"member positions {list(select)}: each must be one of 0-{len(members) - 1} "
                f"(the {len(members)} members of {', '.join(map(str, sources))}, in order), at most once"
            )
        members, described = [members[i] for i in select], [described[i] for i in select]
    if len(members) < 2:
        raise FERCheckpointError(
            f"an ensemble needs at least two members, got {len(members)}: pass two or more checkpoints "
            "(an ensemble file counts as its members)"
        )
    model, checkpoint = _assembled(members, described, checkpoint.meta)
    meta = checkpoint.meta
    card = ModelCard(
        ENSEMBLE_ARCH,
        tuple(meta["classes"]),
        int(meta["image_size"]),
        tuple(meta["mean"]),
        tuple(meta["std"]),
        extra={"members": meta["members"]},
    )
    return save_checkpoint(out, model, card, half=half)
