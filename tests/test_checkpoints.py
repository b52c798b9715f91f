import pytest
import safetensors.torch
import torch

from fer_utils.core.errors import FERCheckpointError
from fer_utils.core.labels import EMOTIONS
from fer_utils.model.assembly import model_from_checkpoint
from fer_utils.model.checkpoints import load_checkpoint, save_checkpoint
from fer_utils.model.factory import build_model
from fer_utils.runtime.description import ModelDescription


@pytest.fixture
def saved(tmp_path):
    model = build_model("efficientnet-b0").eval()
    card = ModelDescription("efficientnet-b0", EMOTIONS, 48, (0.5,) * 3, (0.5,) * 3)
    path = save_checkpoint(tmp_path / "m.safetensors", model, card, config={"lr": 0.01}, metrics={"val_accuracy": 0.5})
    return model, path


def test_round_trip_restores_weights_and_metadata(saved):
    model, path = saved
    loaded, checkpoint = model_from_checkpoint(path)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x))
    assert checkpoint.classes == EMOTIONS and checkpoint.image_size == 48
    assert checkpoint.meta["config"]["lr"] == 0.01 and "torch" in checkpoint.meta["versions"]


def test_truncated_and_foreign_files_are_refused(saved, tmp_path):
    _, path = saved
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(FERCheckpointError, match="truncated"):
        load_checkpoint(truncated)
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(FERCheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "text.safetensors")
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(FERCheckpointError, match="not a fer_utils checkpoint"):
        load_checkpoint(tmp_path / "plain.safetensors")
    with pytest.raises(FERCheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_mismatched_class_list_and_architecture_are_explained(saved):
    _, path = saved
    with pytest.raises(FERCheckpointError, match="trained for classes angry.*data has angry.*contempt"):
        model_from_checkpoint(path, expect_classes=(*EMOTIONS, "contempt"))
    from fer_utils.model.assembly import load_model_weights

    with pytest.raises(FERCheckpointError, match="weights do not fit this model"):
        load_model_weights(build_model("efficientnet-lite0"), load_checkpoint(path))


def test_interrupted_save_keeps_the_previous_checkpoint(saved, monkeypatch):
    model, path = saved
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    card = ModelDescription("efficientnet-b0", EMOTIONS, 48, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, card)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.safetensors"]  # no temp file left


def test_half_precision_checkpoint_is_smaller_and_close(saved, tmp_path):
    model, path = saved
    card = ModelDescription("efficientnet-b0", EMOTIONS, 48, (0.5,) * 3, (0.5,) * 3)
    half = save_checkpoint(tmp_path / "half.safetensors", model, card, half=True)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    loaded, _ = model_from_checkpoint(half)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(model(x).softmax(1), loaded(x).softmax(1), atol=1e-2)


def test_saved_files_get_ordinary_permissions(saved):
    import os
    import stat

    _, path = saved
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
