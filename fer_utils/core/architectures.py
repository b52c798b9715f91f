"""The architectures ``build_model`` knows, as plain data: which backend builds each and how its
inputs are normalized. Torch-free, so configs and the CLI can check a name without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from fer_utils.core.errors import FERConfigError

DEFAULT_DROPOUT = 0.2
"""Dropout before the classifier: the shipped recipe, and what a checkpoint that does not say was built with."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture: backend, the backend's model name, its input normalization."""

    backend: str  # "efficientnet_pytorch" or "timm"
    backend_name: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


ARCHITECTURES: dict[str, ArchSpec] = {
    **{f"efficientnet-b{i}": ArchSpec("efficientnet_pytorch", f"efficientnet-b{i}") for i in range(8)},
    "efficientnet-lite0": ArchSpec("timm", "tf_efficientnet_lite0", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
"""Named architectures; ``timm:NAME`` builds any other timm model."""


def arch_spec(arch: str) -> ArchSpec:
    """The spec for ``arch``, or FERConfigError listing the valid names."""
    if arch in ARCHITECTURES:
        return ARCHITECTURES[arch]
    if arch.startswith("timm:") and len(arch) > 5:
        return ArchSpec("timm", arch[5:])
    raise FERConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)} or timm:NAME")
