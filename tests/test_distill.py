"""Distillation: teacher probabilities stored once, matched to the right faces, mixed into targets;
and the named training recipes (the GPU recipe runs here at toy size on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from fer_utils.cli import main
from fer_utils.core.config import RECIPES, TrainConfig
from fer_utils.core.errors import FERConfigError, FERDataError
from fer_utils.data import load_dataset, synthetic_faces, training_splits
from fer_utils.model.checkpoints import read_checkpoint_meta
from fer_utils.train.distill import distillation_targets, load_teacher, save_teacher

QUICK = ["--epochs", "1", "--image-size", "32", "--no-pretrained", "--batch-size", "32", "--quiet", "--tta", "none"]


def test_teacher_probabilities_follow_their_faces_not_their_order(tmp_path):
    faces = synthetic_faces(3, seed=4)
    probabilities = np.random.default_rng(0).dirichlet(np.ones(7), len(faces)).astype(np.float32)
    path = save_teacher(tmp_path / "t.npz", faces, probabilities, {"checkpoint": "x"})
    assert path.stat().st_size < 5_000
    order = np.random.default_rng(1).permutation(len(faces))
    np.testing.assert_allclose(load_teacher(path, faces.subset(order)), probabilities[order], atol=1e-3)
    with pytest.raises(FERDataError, match="no teacher prediction for 21 of 21"):
        load_teacher(path, _renamed(faces))
    with pytest.raises(FERDataError, match="not a teacher file"):
        (tmp_path / "junk.npz").write_bytes(b"junk")
        load_teacher(tmp_path / "junk.npz", faces)


def _renamed(faces):
    from fer_utils.data import FaceSet

    return FaceSet(faces.images, faces.labels, faces.classes, np.array([f"other{i}.png" for i in range(len(faces))]))


def test_targets_mix_teacher_and_labels():
    faces = synthetic_faces(2, seed=1)
    teacher = np.full((len(faces), 7), 1 / 7, np.float32)
    mixed = distillation_targets(faces, teacher, 0.4).soft_labels
    np.testing.assert_allclose(mixed.sum(axis=1), 1, atol=1e-6)
    assert (mixed.argmax(axis=1) == faces.labels).all()
    np.testing.assert_allclose(mixed[np.arange(len(faces)), faces.labels], 0.6 + 0.4 / 7, atol=1e-6)


def test_cli_teacher_then_student(untrained_checkpoint, tmp_path, capsys):
    teacher = tmp_path / "teacher.npz"
    data = ["--data", "synthetic:0.03"]
    assert main(["teacher", *data, "--checkpoint", str(untrained_checkpoint), "--out", str(teacher)]) == 0
    assert "teacher probabilities for" in capsys.readouterr().out
    train_set, _ = training_splits(load_dataset("synthetic:0.03", progress=False))
    assert load_teacher(teacher, train_set).shape == (len(train_set), 7)
    out = tmp_path / "student"
    assert main(["train", *data, "--out", str(out), "--teacher", str(teacher), "--distill-weight", "0.7", *QUICK]) == 0
    config = read_checkpoint_meta(out / "best.safetensors")["config"]
    assert config["teacher"] == str(teacher) and config["distill_weight"] == 0.7


def test_gpu_recipe_runs_at_toy_size_on_the_cpu(tmp_path):
    out = tmp_path / "gpu"
    argv = ["train", "--recipe", "gpu", "--data", "synthetic:0.03", "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--num-workers", "0", *QUICK]) == 0
    config = read_checkpoint_meta(out / "best.safetensors")["config"]
    assert config["arch"] == RECIPES["gpu"]["arch"] == "timm:tf_efficientnet_lite1"
    assert (config["image_size"], config["epochs"], config["precision"]) == (32, 1, "auto")
    assert TrainConfig.from_recipe("gpu").image_size == 224
    with pytest.raises(FERConfigError, match="recipe must be one of"):
        TrainConfig.from_recipe("tpu")


def test_teacher_keys_tell_apart_faces_that_share_a_file_name_across_classes():
    # The Kaggle FER2013 folders reuse file names across class folders (e.g. angry/ and sad/).
    from fer_utils.data import FaceSet
    from fer_utils.train.distill import face_keys

    faces = synthetic_faces(1, seed=2)
    sources = np.array([f"/data/train/{faces.classes[label]}/Training_1.jpg" for label in faces.labels])
    keys = face_keys(FaceSet(faces.images, faces.labels, faces.classes, sources))
    assert len(set(keys)) == len(faces) and keys[0].endswith("/Training_1.jpg")
    with pytest.raises(FERDataError, match="share a folder and file name"):
        face_keys(FaceSet(faces.images, faces.labels, faces.classes, np.array(["same.jpg"] * len(faces))))
