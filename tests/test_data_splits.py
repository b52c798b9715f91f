import numpy as np
import pytest
import torch

from fer_utils.core.errors import FERDataError
from fer_utils.data import (
    FaceSet,
    class_weights,
    load_dataset,
    stratified_split,
    synthetic_faces,
    training_splits,
    weighted_sampler,
)
from fer_utils.data.cache import cache_file


def imbalanced() -> FaceSet:
    faces = synthetic_faces(n_per_class=20, seed=1)
    keep = np.ones(len(faces), bool)
    keep[np.flatnonzero(faces.labels == 1)[4:]] = False  # only 4 disgust faces
    return faces.subset(keep)


def test_synthetic_faces_are_seeded_balanced_and_varied():
    a, b, c = synthetic_faces(5, seed=1), synthetic_faces(5, seed=1), synthetic_faces(5, seed=2)
    assert (a.images == b.images).all() and (a.labels == b.labels).all()
    assert not (a.images == c.images).all()
    assert a.class_counts().tolist() == [5] * 7
    assert a.images.std(axis=(1, 2)).min() > 5  # faces, not blank frames


def test_stratified_split_keeps_class_proportions():
    faces = synthetic_faces(n_per_class=20, seed=0)
    train, val = stratified_split(faces, 0.25, seed=0)
    assert len(train) + len(val) == len(faces)
    assert val.class_counts().tolist() == [5] * 7
    assert not set(train.sources) & set(val.sources)


def test_training_splits_use_dataset_validation_or_carve_one(fer2013_csv, class_folder_dataset):
    train, val = training_splits(load_dataset(fer2013_csv))
    assert (len(train), len(val)) == (14, 7)
    train, val = training_splits(load_dataset(class_folder_dataset), val_fraction=0.5)
    assert (len(train), len(val)) == (7, 7)


def test_class_weights_favour_rare_classes_and_sampler_balances():
    faces = imbalanced()
    weights = class_weights(faces)
    assert weights[1] > 3 * weights[0]
    sampler = weighted_sampler(faces, torch.Generator().manual_seed(0))
    drawn = np.bincount(faces.labels[list(sampler)], minlength=7)
    assert drawn[1] > 8  # disgust drawn far above its 4 / 124 share


def test_split_names_and_errors():
    dataset = load_dataset("synthetic:0.05")
    assert len(dataset.split("val,test")) == len(dataset.splits["val"]) + len(dataset.splits["test"])
    with pytest.raises(FERDataError, match="split 'nope' not found"):
        dataset.split("nope")


def test_cache_is_invalidated_by_changes_and_survives_corruption(class_folder_dataset, tmp_path):
    load_dataset(class_folder_dataset)
    entry = cache_file(class_folder_dataset, {"size": 48, "contempt": False, "ferplus": None, "mode": "majority"})
    assert entry.is_file()
    entry.write_bytes(b"garbage")  # a broken cache entry is rebuilt, not trusted
    rebuilt = load_dataset(class_folder_dataset)
    assert not any("from cache" in n for n in rebuilt.notes) and len(rebuilt.splits["all"]) == 14
    victim = next((class_folder_dataset / "happy").iterdir())
    victim.unlink()
    assert len(load_dataset(class_folder_dataset).splits["all"]) == 13


def test_a_stratified_sample_holds_every_class_in_its_share():
    from fer_utils.data import stratified_sample, synthetic_faces

    faces = synthetic_faces(40, seed=0)
    order = np.argsort(faces.labels, kind="stable")  # sorted by class, like a class-folder dataset
    faces = faces.subset(order)
    sample = stratified_sample(faces, 70, seed=0)
    assert len(sample) == 70 and set(sample.labels) == set(range(len(faces.classes)))
    assert (np.bincount(sample.labels) == 10).all()  # equal classes: equal shares
    assert len(stratified_sample(faces, 10_000)) == len(faces)
    # the first seven faces are one of each class: a gallery of "the first few" shows them all
    assert sorted(sample.labels[:7]) == list(range(7))
    assert sorted(stratified_sample(faces, 10_000).labels[:7]) == list(range(7))


def test_class_turns_shows_every_class_first_and_keeps_each_class_in_order():
    from fer_utils.data import class_turns

    labels = np.array([0, 0, 0, 1, 1, 2])  # sorted by class, as a class-folder dataset is
    order = class_turns(labels)
    assert labels[order].tolist() == [0, 1, 2, 0, 1, 0] and order.tolist() == [0, 3, 5, 1, 4, 2]
