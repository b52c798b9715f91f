import pytest
import torch

from fer_utils.core.architectures import arch_spec
from fer_utils.core.errors import FERConfigError
from fer_utils.model.factory import build_model, classifier_layer, offline_weights_file, read_state_dict


@pytest.mark.parametrize("arch", ["efficientnet-b0", "efficientnet-lite0"])
def test_models_classify_small_gray_faces(arch):
    torch.manual_seed(0)  # the head's random init and the input: the same whatever ran before in this process
    model = build_model(arch, num_classes=7).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 48, 48))
    assert logits.shape == (2, 7)
    assert logits.abs().max() < 1.0  # small head init: near-uniform start


def test_freeze_backbone_trains_only_the_classifier():
    model = build_model("efficientnet-b0", freeze_backbone=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"_fc.weight", "_fc.bias"}


def test_local_weights_file_loads_backbone_and_keeps_new_head(tmp_path):
    source = build_model("efficientnet-b0", num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "b0.pth")
    model = build_model("efficientnet-b0", num_classes=7, pretrained=str(tmp_path / "b0.pth"))
    assert torch.equal(model._conv_stem.weight, source._conv_stem.weight)
    assert classifier_layer(model).out_features == 7


@pytest.mark.parametrize("arch", ["efficientnet-lite0", "timm:tf_efficientnet_lite1"])
def test_offline_lite_imagenet_weights_load(arch):
    # the GPU recipe (Lite1) and the CPU default (Lite0) start from ImageNet without internet
    path = offline_weights_file(arch_spec(arch))
    assert path is not None, f"{arch}: its weights package is in requirements-course.txt, so it must be found"
    model = build_model(arch, pretrained=True)
    assert torch.equal(model.conv_stem.weight, read_state_dict(path)["_conv_stem.weight"])
    assert classifier_layer(model).out_features == 7


def test_wrong_weights_and_names_are_explained(tmp_path):
    torch.save(build_model("efficientnet-b1").state_dict(), tmp_path / "b1.pth")
    with pytest.raises(FERConfigError, match="do not fit this architecture"):
        build_model("efficientnet-b0", pretrained=str(tmp_path / "b1.pth"))
    (tmp_path / "junk.pth").write_text("junk")
    with pytest.raises(FERConfigError, match="not a readable weights file"):
        build_model("efficientnet-b0", pretrained=str(tmp_path / "junk.pth"))
    with pytest.raises(FERConfigError, match="unknown architecture 'resnet9'"):
        build_model("resnet9")


def test_a_run_starts_from_one_member_of_an_ensemble_file(tmp_path, two_member_ensemble):
    # fine-tuning the shipped photo model on one's own faces starts from one of its members
    packed, members = two_member_ensemble
    model = build_model("efficientnet-lite0", pretrained=str(packed), pretrained_member=1)
    assert torch.equal(model.conv_stem.weight, members[1].conv_stem.weight)
    assert not torch.equal(model.conv_stem.weight, members[0].conv_stem.weight)
    assert not torch.equal(model.classifier.weight, members[1].classifier.weight)  # a new head
    with pytest.raises(FERConfigError, match=r"e.safetensors: an ensemble of 2 members.*--pretrained-member N"):
        build_model("efficientnet-lite0", pretrained=str(packed))
    with pytest.raises(FERConfigError, match=r"N from 0 to 1 \(got 2\)"):
        build_model("efficientnet-lite0", pretrained=str(packed), pretrained_member=2)
    with pytest.raises(FERConfigError, match=r"m0.safetensors: not an ensemble file, so it has no member 1"):
        build_model("efficientnet-lite0", pretrained=str(tmp_path / "m0.safetensors"), pretrained_member=1)
    from fer_utils.core.config import TrainConfig

    with pytest.raises(FERConfigError, match="pretrained_member picks a member"):
        TrainConfig(pretrained_member=0)  # ImageNet weights have no members


def test_an_architecture_registered_in_one_place_is_known_everywhere(tmp_path, monkeypatch):
    """register_architecture adds a name that build_model, TrainConfig, checkpoints and the
    Predictor all know; a name cannot change meaning, and every backend has a builder."""
    import numpy as np

    from fer_utils import EMOTIONS, Predictor, TrainConfig, register_architecture
    from fer_utils.core import architectures
    from fer_utils.core.architectures import BACKENDS
    from fer_utils.core.errors import FERConfigError
    from fer_utils.model.checkpoints import save_checkpoint
    from fer_utils.model.factory import BUILDERS, IMAGENET_DOWNLOADS
    from fer_utils.runtime.description import ModelDescription

    assert set(BUILDERS) == set(IMAGENET_DOWNLOADS) == set(BACKENDS)
    monkeypatch.setattr(architectures, "ARCHITECTURES", dict(architectures.ARCHITECTURES))
    with pytest.raises(FERConfigError, match="my-lite.*TrainConfig|unknown architecture 'my-lite'"):
        TrainConfig(arch="my-lite").validate()
    register_architecture("my-lite", "timm", "tf_efficientnet_lite0", (0.4, 0.4, 0.4), (0.3, 0.3, 0.3))
    register_architecture("my-lite", "timm", "tf_efficientnet_lite0", (0.4, 0.4, 0.4), (0.3, 0.3, 0.3))  # same: fine
    TrainConfig(arch="my-lite").validate()
    model = build_model("my-lite", num_classes=7).eval()
    assert model(torch.rand(2, 3, 48, 48)).shape == (2, 7)
    description = ModelDescription("my-lite", EMOTIONS, 48, (0.4,) * 3, (0.3,) * 3)
    path = save_checkpoint(tmp_path / "mine.safetensors", model, description)
    predictor = Predictor.from_checkpoint(path, runtime="torch")
    assert predictor.description.arch == "my-lite"
    assert predictor.predict_arrays(np.zeros((1, 48, 48), np.uint8)).shape == (1, 7)
    with pytest.raises(FERConfigError, match="already registered"):
        register_architecture("my-lite", "timm", "tf_efficientnet_lite1")
    with pytest.raises(FERConfigError, match="backend 'keras' is not one of"):
        register_architecture("other", "keras", "x")
