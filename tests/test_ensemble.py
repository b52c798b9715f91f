"""Ensembles: several checkpoints averaged, packed into one file, evaluated, exported, explained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fer_utils.cli import main
from fer_utils.core.architectures import IMAGENET_MEAN, IMAGENET_STD
from fer_utils.core.errors import FERCheckpointError
from fer_utils.core.labels import EMOTIONS
from fer_utils.core.metadata import member_sizes, member_stats
from fer_utils.model.assembly import load_model, save_ensemble
from fer_utils.model.calibration import base_model
from fer_utils.model.checkpoints import read_checkpoint_meta, save_checkpoint
from fer_utils.model.factory import Ensemble, build_model
from fer_utils.predict.predictor import Predictor
from fer_utils.runtime.description import ModelDescription
from fer_utils.train.evaluation import evaluate_checkpoint, evaluate_model


def member(path, seed: int, image_size: int = 48, mean=(0.5,) * 3, std=(0.5,) * 3):
    torch.manual_seed(seed)
    model = build_model("efficientnet-lite0").eval()
    torch.nn.init.normal_(model.get_classifier().weight, std=0.5)  # members that disagree visibly
    card = ModelDescription("efficientnet-lite0", EMOTIONS, image_size, mean, std)
    return save_checkpoint(path, model, card, config={"dropout": 0.2}, metrics={"seed": seed})


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    return [member(folder / f"m{i}.safetensors", seed=i) for i in range(3)]


def test_ensemble_probabilities_are_the_mean_of_its_members(members, small_faces):
    faces = list(small_faces.images[:5])
    each = [Predictor.from_checkpoint(m, runtime="torch").predict_arrays(faces) for m in members]
    together = Predictor.from_checkpoint(members, runtime="torch").predict_arrays(faces)
    np.testing.assert_allclose(together, np.mean(each, axis=0), atol=1e-6)
    assert not np.allclose(each[0], each[1], atol=1e-3)  # the members really differ
    np.testing.assert_allclose(together.sum(axis=1), 1, atol=1e-5)


def test_packed_ensemble_loads_like_one_model_and_predicts_the_same(members, small_faces, tmp_path, capsys):
    out = tmp_path / "ens.safetensors"
    assert main(["ensemble", *map(str, members), "--out", str(out)]) == 0
    assert "3 members" in capsys.readouterr().out
    meta = read_checkpoint_meta(out)
    assert meta["arch"] == "ensemble" and [m["source"] for m in meta["members"]] == list(map(str, members))
    model, _ = load_model(out)
    assert isinstance(model, Ensemble) and len(model.members) == 3
    faces = list(small_faces.images[:4])
    np.testing.assert_allclose(
        Predictor.from_checkpoint(out, runtime="torch").predict_arrays(faces),
        Predictor.from_checkpoint(members, runtime="torch").predict_arrays(faces),
        atol=1e-6,
    )
    nested, _ = load_model([out, members[0]])  # an ensemble inside a list is flattened: 4 equal votes
    assert len(nested.members) == 4


def test_select_keeps_chosen_members_in_order_and_refuses_bad_positions(members, small_faces, tmp_path, capsys):
    packed = save_ensemble(members, tmp_path / "three.safetensors")
    big = member(tmp_path / "big.safetensors", seed=9, image_size=64)
    # member 1 of the packed three swapped for a new run, the new one in its place
    out = tmp_path / "swapped.safetensors"
    assert main(["ensemble", str(packed), str(big), "--select", "0", "3", "2", "--out", str(out)]) == 0
    assert "member 1: " + str(big) + " at 64 px" in capsys.readouterr().out
    meta = read_checkpoint_meta(out)
    assert [m["source"] for m in meta["members"]] == [str(members[0]), str(big), str(members[2])]
    assert member_sizes(meta) == [48, 64, 48]
    faces = list(small_faces.images[:5])
    np.testing.assert_allclose(
        Predictor.from_checkpoint(out, runtime="torch").predict_arrays(faces),
        Predictor.from_checkpoint([members[0], big, members[2]], runtime="torch").predict_arrays(faces),
        atol=1e-5,
    )
    # two of one ensemble file alone: a smaller ensemble
    two = save_ensemble([packed], tmp_path / "two.safetensors", select=[2, 0])
    assert [m["source"] for m in read_checkpoint_meta(two)["members"]] == [str(members[2]), str(members[0])]
    for select, words in (([0, 3], "0-2"), ([1, 1], "at most once"), ([1], "at least two members")):
        with pytest.raises(FERCheckpointError, match=words):
            save_ensemble([packed], tmp_path / "bad.safetensors", select=select)
    assert not (tmp_path / "bad.safetensors").exists()


def test_members_of_different_sizes_each_see_their_own_preprocessing(members, small_faces, tmp_path):
    big = member(tmp_path / "big.safetensors", seed=9, image_size=64)
    faces = list(small_faces.images[:5])
    each = [Predictor.from_checkpoint(m, runtime="torch").predict_arrays(faces) for m in (members[0], big)]
    mixed = Predictor.from_checkpoint([members[0], big], runtime="torch")
    assert mixed.checkpoint.image_size == 48 and mixed.model.sizes == [48, 64]  # takes the stored face
    np.testing.assert_allclose(mixed.predict_arrays(faces), np.mean(each, axis=0), atol=1e-5)
    # one member on its own, fed what it sees inside the ensemble (lesson 06 explains a member so)
    alone = Predictor.from_checkpoint(big, runtime="torch")
    view = base_model(mixed.model).member_input(1, mixed.input_tensor(faces))
    assert view.shape[-2:] == (64, 64)
    np.testing.assert_allclose(view.numpy(), alone.input_tensor(faces).numpy(), atol=1e-5)
    packed = save_ensemble([members[0], big], tmp_path / "mixed.safetensors")
    np.testing.assert_allclose(
        Predictor.from_checkpoint(packed, runtime="torch").predict_arrays(faces), np.mean(each, axis=0), atol=1e-5
    )
    onnx = Predictor.from_checkpoint(packed, runtime="onnx")  # the resize is part of the exported graph
    np.testing.assert_allclose(onnx.predict_arrays(faces), np.mean(each, axis=0), atol=1e-4)


def test_crop_tta_of_members_of_different_sizes_resizes_each_crop_once(members, small_faces, tmp_path):
    big = member(tmp_path / "big.safetensors", seed=9, image_size=72)
    faces = list(small_faces.images[:5])
    each = [Predictor.from_checkpoint(m, runtime="torch", tta="crops").predict_arrays(faces) for m in (members[0], big)]
    packed = save_ensemble([members[0], big], tmp_path / "mixed.safetensors")
    for runtime in ("torch", "onnx"):  # the exported graph takes the 43 px crops and enlarges them itself
        crops = Predictor.from_checkpoint(packed, runtime=runtime, tta="crops").predict_arrays(faces)
        np.testing.assert_allclose(crops, np.mean(each, axis=0), atol=1e-4)
    report = evaluate_checkpoint(packed, small_faces.subset(np.arange(5)), tta="crops")
    np.testing.assert_allclose(report.probabilities, np.mean(each, axis=0), atol=1e-4)


def test_members_of_another_normalization_see_their_own_input(members, small_faces, tmp_path):
    imagenet = member(tmp_path / "imagenet.safetensors", seed=7, image_size=72, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    faces = list(small_faces.images[:5])
    each = [Predictor.from_checkpoint(m, runtime="torch").predict_arrays(faces) for m in (members[0], imagenet)]
    assert not np.allclose(each[0], each[1], atol=1e-3)
    packed = save_ensemble([members[0], imagenet], tmp_path / "two-norms.safetensors")
    assert read_checkpoint_meta(packed)["members"][1]["mean"] == list(IMAGENET_MEAN)
    for runtime in ("torch", "onnx"):
        np.testing.assert_allclose(
            Predictor.from_checkpoint(packed, runtime=runtime).predict_arrays(faces), np.mean(each, axis=0), atol=1e-4
        )
    # a member taken out of the packed file, given its own size and statistics, is the member again
    meta = read_checkpoint_meta(packed)
    assert member_stats(meta)[1] == (list(IMAGENET_MEAN), list(IMAGENET_STD))
    subset = small_faces.subset(np.arange(5))
    model, checkpoint = load_model(packed)
    second = checkpoint.member_descriptions()[1]
    assert (second.image_size, second.mean, second.std) == (member_sizes(meta)[1], IMAGENET_MEAN, IMAGENET_STD)
    alone = evaluate_model(model.members[1], subset, second)
    np.testing.assert_allclose(alone.probabilities, evaluate_checkpoint(imagenet, subset).probabilities, atol=1e-5)


def test_members_must_share_classes_and_a_usable_size(members, tmp_path):
    model = build_model("efficientnet-lite0", num_classes=2).eval()
    card = ModelDescription("efficientnet-lite0", ("happy", "sad"), 48, (0.5,) * 3, (0.5,) * 3)
    other = save_checkpoint(tmp_path / "two.safetensors", model, card)
    with pytest.raises(FERCheckpointError, match="two.safetensors: its classes"):
        load_model([members[0], other])
    small = member(tmp_path / "small.safetensors", seed=8, image_size=32)
    with pytest.raises(FERCheckpointError, match="at least 48 px"):
        load_model([members[0], small])
    with pytest.raises(FERCheckpointError, match="no checkpoint"):
        load_model([])


def test_cli_evaluates_and_predicts_with_several_checkpoints(members, tmp_path, capsys, small_faces):
    from PIL import Image

    report = tmp_path / "r.json"
    argv = ["evaluate", "--data", "synthetic:0.03", "--split", "val", "--checkpoint", *map(str, members)]
    assert main([*argv, "--json", str(report)]) == 0
    assert " + " in json.loads(report.read_text())["checkpoint"]
    photo = tmp_path / "face.png"
    Image.fromarray(small_faces.images[0]).save(photo)
    assert main(["predict", str(photo), "--checkpoint", *map(str, members), "--json", str(tmp_path / "p.json")]) == 0
    probabilities = json.loads((tmp_path / "p.json").read_text())["images"][0]["faces"][0]["probabilities"]
    expected = Predictor.from_checkpoint(members).predict_image(photo).faces[0].probabilities
    assert probabilities == pytest.approx(expected, abs=1e-6)


def test_ensemble_gradcam_averages_the_members_maps(members, small_faces):
    maps = Predictor.from_checkpoint(members[:2]).gradcam(list(small_faces.images[:2]))
    assert maps.shape == (2, 48, 48) and np.isfinite(maps).all()


def test_ensemble_exports_as_one_onnx_graph(members, tmp_path):
    pytest.importorskip("onnxruntime")
    from fer_utils.model.export import export_onnx, onnx_metadata
    from fer_utils.runtime.onnx import onnx_probabilities

    packed = save_ensemble(members[:2], tmp_path / "two.safetensors")
    result = export_onnx(packed, tmp_path / "two.onnx")
    assert result.max_probability_difference < 1e-4
    assert onnx_metadata(result.path)["arch"] == "ensemble"
    predictor = Predictor.from_checkpoint(packed)
    inputs = predictor.input_tensor(list(np.asarray(torch.randint(0, 255, (3, 48, 48), dtype=torch.uint8))))
    with torch.inference_mode():
        expected = predictor.model(inputs).softmax(dim=1).numpy()
    np.testing.assert_allclose(onnx_probabilities(result.path, inputs.numpy()), expected, atol=1e-4)


def test_half_precision_ensemble_is_half_the_size_and_agrees(members, small_faces, tmp_path):
    full = save_ensemble(members, tmp_path / "full.safetensors")
    half = save_ensemble(members, tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    faces = list(small_faces.images[:6])
    np.testing.assert_allclose(
        Predictor.from_checkpoint(half, runtime="torch").predict_arrays(faces),
        Predictor.from_checkpoint(full, runtime="torch").predict_arrays(faces),
        atol=2e-3,
    )
