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


BACKENDS = ("efficientnet_pytorch", "timm")
"""The libraries that build the models; :mod:`fer_utils.model.factory` holds each one's builder."""


@dataclass(frozen=True)
class ArchSpec:
    """How to build one architecture: backend, the backend's model name, its input normalization."""

    backend: str  # one of BACKENDS
    backend_name: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


ARCHITECTURES: dict[str, ArchSpec] = {}
"""Named architectures, filled by :func:`register_architecture`; ``timm:NAME`` builds any other timm model."""


def register_architecture(
    name: str,
    backend: str,
    backend_name: str,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> ArchSpec:
    """Make ``name`` an architecture everything knows (``build_model``, ``TrainConfig(arch=...)``,
    checkpoints, ensembles, ``fer train --arch``), built by ``backend`` as ``backend_name`` and fed
    inputs normalized with ``mean``/``std``: the one place an architecture is added, as timm's
    ``register_model`` is. Registering a name again with the same spec does nothing; with another,
    it is refused (a checkpoint names its architecture and must keep meaning the same model)."""
    if not name or name.startswith("timm:") or not name.isprintable():
        raise FERConfigError(f"architecture name {name!r}: give a printable name that does not start with 'timm:'")
    if backend not in BACKENDS:
        raise FERConfigError(f"architecture {name!r}: backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if not (len(mean) == len(std) == 3 and all(v > 0 for v in std)):
        raise FERConfigError(f"architecture {name!r}: mean and std must be three values each, std positive")
    spec = ArchSpec(backend, backend_name, tuple(mean), tuple(std))  # type: ignore[arg-type]
    if ARCHITECTURES.get(name, spec) != spec:
        raise FERConfigError(
            f"architecture {name!r} is already registered as {ARCHITECTURES[name]}; choose another name"
        )
    ARCHITECTURES[name] = spec
    return spec


for _b in range(8):
    register_architecture(f"efficientnet-b{_b}", "efficientnet_pytorch", f"efficientnet-b{_b}")
register_architecture("efficientnet-lite0", "timm", "tf_efficientnet_lite0", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def arch_spec(arch: str) -> ArchSpec:
    """The spec for ``arch``, or FERConfigError listing the valid names."""
    if arch in ARCHITECTURES:
        return ARCHITECTURES[arch]
    if arch.startswith("timm:") and len(arch) > 5:
        return ArchSpec("timm", arch[5:])
    raise FERConfigError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)} or timm:NAME")
