"""In-memory face datasets: uint8 arrays plus labels, and the operations training needs on them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from fer_utils.core.errors import FERDataError
from fer_utils.core.labels import SPLIT_ALIASES, SPLITS
from fer_utils.data.images import Skipped as Skipped  # re-exported: datasets report skipped files

SPLIT_NAMES: dict[str, str] = {**SPLIT_ALIASES, "all": "all"}
"""What ``LoadedDataset.split`` accepts: every split alias, and ``all``."""


@dataclass
class FaceSet:
    """Grayscale faces held in memory: ``images`` (N, H, W) uint8 and ``labels`` (N,) class indices.

    ``sources`` names where each face came from (a file name or a CSV row) so errors and
    misclassification galleries can point at it. ``soft_labels`` (N, C) holds vote
    distributions when a dataset provides them (FER+).
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    sources: np.ndarray
    soft_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.images = np.ascontiguousarray(self.images, dtype=np.uint8)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.sources = np.asarray(self.sources, dtype=str)
        self.classes = tuple(self.classes)
        n = len(self.images)
        if self.images.ndim != 3 or len(self.labels) != n or len(self.sources) != n:
            raise ValueError(
                f"FaceSet needs images (N,H,W), labels (N,), sources (N,); got "
                f"{self.images.shape}, {self.labels.shape}, {self.sources.shape}"
            )
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(f"labels must be in 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> int:
        """Side of the stored square images in pixels."""
        return int(self.images.shape[1])

    def subset(self, index: np.ndarray | Sequence[int]) -> FaceSet:
        """A new FaceSet holding the rows at ``index`` (a boolean mask or integer indices)."""
        index = np.asarray(index)
        soft = None if self.soft_labels is None else self.soft_labels[index]
        return FaceSet(self.images[index], self.labels[index], self.classes, self.sources[index], soft)

    def class_counts(self) -> pd.Series:
        """Number of faces per class, in class order (zeros included)."""
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return pd.Series(counts, index=pd.Index(self.classes, name="class"), name="count")

    @staticmethod
    def concat(sets: Sequence[FaceSet]) -> FaceSet:
        """Join several FaceSets with the same classes and image size into one."""
        if not sets:
            raise ValueError("nothing to concatenate")
        classes = sets[0].classes
        if any(s.classes != classes for s in sets):
            raise ValueError("cannot concatenate FaceSets with different class lists")
        soft = None
        if all(s.soft_labels is not None for s in sets):
            soft = np.concatenate([s.soft_labels for s in sets])
        return FaceSet(
            np.concatenate([s.images for s in sets]),
            np.concatenate([s.labels for s in sets]),
            classes,
            np.concatenate([s.sources for s in sets]),
            soft,
        )


@dataclass
class LoadedDataset:
    """What a loader found: named splits (train / val / test / all), the format, and any skips."""

    splits: dict[str, FaceSet]
    format: str
    source: str
    classes: tuple[str, ...]
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        order = (*SPLITS, "all")
        self.splits = dict(sorted(self.splits.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 9))

    def split(self, name: str) -> FaceSet:
        """One split by name; also accepts FER2013 names (PublicTest, PrivateTest) and ``a,b`` unions."""
        parts = [p.strip() for p in name.split(",") if p.strip()]
        keys = []
        for part in parts:
            key = SPLIT_NAMES.get(part.lower())
            if key is None or key not in self.splits:
                raise FERDataError(f"split {part!r} not found in {self.source}: it has {', '.join(self.splits)}")
            keys.append(key)
        if not keys:
            raise FERDataError(f"empty split name; {self.source} has {', '.join(self.splits)}")
        return self.splits[keys[0]] if len(keys) == 1 else FaceSet.concat([self.splits[k] for k in keys])

    def default_eval_split(self) -> str:
        """The split a report should use: test, else val, else everything."""
        for name in ("test", "val", "all"):
            if name in self.splits:
                return name
        return next(iter(self.splits))

    def class_count_table(self) -> pd.DataFrame:
        """Per-class counts for every split, with a total row; what ``fer data info`` prints."""
        table = pd.DataFrame({name: s.class_counts() for name, s in self.splits.items()})
        table.loc["total"] = table.sum()
        return table


def stratified_sample(faces: FaceSet, n: int, seed: int = 0) -> FaceSet:
    """``n`` faces (all when there are fewer) drawn per class in proportion to the classes, with at
    least one face of every class present: a sample that represents the data, unlike the first
    ``n`` faces of a folder sorted by class. The faces take turns by class (one of each class, then
    the next of each, ...), so the first few of the sample already show different classes."""
    rng = np.random.default_rng(seed)
    present = np.unique(faces.labels)
    counts = {c: int((faces.labels == c).sum()) for c in present}
    if n >= len(faces):
        share = counts
    elif n < len(present):
        raise FERDataError(f"a sample of {n} faces cannot hold all {len(present)} classes present; ask for more")
    else:
        share = {c: max(1, round(n * counts[c] / len(faces))) for c in present}
        while sum(share.values()) > n:  # rounding up the small classes may overshoot: trim the largest
            largest = max(share, key=share.get)
            share[largest] -= 1
    chosen = np.concatenate(
        [rng.choice(np.flatnonzero(faces.labels == c), min(share[c], counts[c]), replace=False) for c in present]
    )
    return faces.subset(chosen[class_turns(faces.labels[chosen])])


def class_turns(labels: np.ndarray) -> np.ndarray:
    """An order of ``labels``' positions in which the classes take turns: the first face of each
    class, then the second of each, and so on (within a class, the given order). Any prefix of it
    shows as many classes as it can: how the course picks "some faces" to show from sorted data."""
    labels = np.asarray(labels)
    turn = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        turn[where] = np.arange(len(where))  # each face's place within its class
    return np.lexsort((labels, turn))


def stratified_split(faces: FaceSet, val_fraction: float, seed: int) -> tuple[FaceSet, FaceSet]:
    """Split into (train, val) keeping class proportions; used when a dataset has no validation split."""
    from sklearn.model_selection import train_test_split

    if not 0 < val_fraction < 1:
        raise FERDataError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    index = np.arange(len(faces))
    counts = np.bincount(faces.labels)
    stratify = faces.labels if counts[counts > 0].min() >= 2 else None
    try:
        train_idx, val_idx = train_test_split(index, test_size=val_fraction, random_state=seed, stratify=stratify)
    except ValueError as err:
        raise FERDataError(
            f"cannot split {len(faces)} faces into train/validation with fraction {val_fraction}: {err}"
        ) from None
    return faces.subset(np.sort(train_idx)), faces.subset(np.sort(val_idx))


def class_weights(faces: FaceSet) -> torch.Tensor:
    """Inverse-frequency weights (mean 1 over present classes), e.g. for a rare class like disgust.

    Uses scikit-learn's "balanced" formula; classes with no faces get weight 0.
    """
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(faces.labels)
    weights = np.zeros(len(faces.classes), dtype=np.float32)
    weights[present] = compute_class_weight("balanced", classes=present, y=faces.labels)
    return torch.from_numpy(weights)


def weighted_sampler(faces: FaceSet, generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """A sampler that draws every class equally often (with replacement), one epoch = len(faces)."""
    per_sample = class_weights(faces)[torch.from_numpy(faces.labels)].double()
    return WeightedRandomSampler(per_sample, num_samples=len(faces), replacement=True, generator=generator)


class TorchFaceDataset(Dataset):
    """A torch Dataset over a FaceSet: yields (transformed image tensor, target).

    The target is the class index, or the soft label vector when the FaceSet has one.
    """

    def __init__(
        self,
        faces: FaceSet,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        use_soft_labels: bool = True,
    ) -> None:
        self.faces = faces
        self.transform = transform
        self.images = torch.from_numpy(faces.images).unsqueeze(1)  # (N, 1, H, W) uint8, shares memory
        if use_soft_labels and faces.soft_labels is not None:
            self.targets = torch.from_numpy(faces.soft_labels)
        else:
            self.targets = torch.from_numpy(faces.labels)

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[i]
