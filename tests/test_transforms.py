import torch

from fer_utils.transforms import eval_transform, train_transform, tta_views


def face():
    return torch.randint(0, 256, (1, 48, 48), dtype=torch.uint8)


def test_train_and_eval_transforms_give_normalized_3_channel_tensors():
    x = face()
    for transform in (train_transform(64, 0.5), eval_transform(64)):
        out = transform(x)
        assert out.shape == (3, 64, 64) and out.dtype == torch.float32
        assert torch.equal(out[0], out[1])  # gray repeated
        assert out.min() >= -1.01 and out.max() <= 1.01
    assert eval_transform(48, channels=1)(x).shape == (1, 48, 48)


def test_augmentation_strength_zero_is_deterministic_and_positive_is_random():
    x = face()
    assert torch.equal(train_transform(48, 0.0)(x), eval_transform(48)(x))
    torch.manual_seed(0)
    strong = train_transform(48, 1.0)
    assert not torch.equal(strong(x), strong(x))


def test_tta_views():
    batch = torch.randn(4, 3, 48, 48)
    flip = tta_views(batch, "flip")
    assert flip.shape == (2, 4, 3, 48, 48)
    assert torch.equal(flip[1], batch.flip(-1))
    assert tta_views(batch, "crops").shape == (10, 4, 3, 48, 48)
