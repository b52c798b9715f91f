"""Models from checkpoints: a model built as a checkpoint's description says (architecture,
classes, dropout; an ensemble's members each as described), its weights checked to fit and
loaded, and several checkpoints packed into one ensemble file. The file format itself is
:mod:`fer_utils.model.checkpoints`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fer_utils.core.architectures import DEFAULT_DROPOUT
from fer_utils.core.errors import FERCheckpointError
from fer_utils.core.metadata import (
    ENSEMBLE_ARCH,
    FORMAT,
    FORMAT_VERSION,
    CheckpointSource,
    member_stats,
)
from fer_utils.core.outputs import check_outputs
from fer_utils.data.images import DEFAULT_FACE_SIZE
from fer_utils.model.calibration import TemperatureScaled, base_model
from fer_utils.model.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from fer_utils.runtime.description import ModelDescription


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


def _model_described_by(meta: dict[str, Any]) -> nn.Module:
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
        described = ModelDescription.from_meta(meta)
        sizes = list(described.member_sizes) if described.resizes_input else None
        return Ensemble([single(m) for m in meta["members"]], sizes, member_norms(meta))
    return single(meta)


def member_norms(meta: dict[str, Any]) -> list:
    """For each member of the ensemble ``meta`` describes, how to turn the ensemble's normalized
    input into its own (see :class:`fer_utils.model.factory.Ensemble`)."""
    from fer_utils.model.factory import normalization_change

    into = (meta["mean"], meta["std"])
    return [normalization_change(into, own) for own in member_stats(meta)]


def _empty_model_for(checkpoint: Checkpoint) -> nn.Module:
    """The model the metadata describes, built on PyTorch's meta device first (no memory, no
    random initialization) and checked against the weights' names and shapes, so an edited
    architecture is refused before gigabytes are allocated; then given real (empty) storage for
    the weights to fill. Backends that cannot build there are built the ordinary way."""
    try:
        with torch.device("meta"):
            model = _model_described_by(checkpoint.meta)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return _model_described_by(checkpoint.meta)
    state = model.state_dict()
    _check_fit(state, checkpoint, "The metadata describes another model than the weights: edited or damaged")
    if any(name not in state for name, _ in model.named_buffers()):  # not in the file: would stay empty
        return _model_described_by(checkpoint.meta)
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
    model = _empty_model_for(checkpoint)
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
    return _ensemble_of(members, described, first.meta)


def _members_described(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Each member's description in an ensemble's metadata, completed by the ensemble's own input
    size and normalization where an older file left them out."""
    own = {key: meta[key] for key in ("image_size", "mean", "std")}
    return [{**own, **m} for m in meta["members"]]


def _ensemble_of(
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
    model, checkpoint = _ensemble_of(members, described, checkpoint.meta)
    meta = checkpoint.meta
    description = dataclasses.replace(checkpoint.description, arch=ENSEMBLE_ARCH)
    return save_checkpoint(out, model, description, extra={"members": meta["members"]}, half=half)
