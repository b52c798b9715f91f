import numpy as np
import pytest
import torch

from fer_utils.core.errors import FERConfigError
from fer_utils.runtime.preprocess import crop_boxes, face_inputs, tta_inputs
from fer_utils.train.transforms import batch_mixing, eval_transform, train_transform


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


def test_tta_views_are_cut_from_the_face_and_resized_once():
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    norm = ((0.5,) * 3, (0.5,) * 3)
    assert tta_inputs(faces, 64, *norm).shape == (1, 4, 3, 64, 64)
    flip = tta_inputs(faces, 64, *norm, mode="flip")
    np.testing.assert_array_equal(flip[0], face_inputs(faces, 64, *norm))
    np.testing.assert_allclose(flip[1], flip[0][..., ::-1], atol=1e-6)  # the mirror
    crops = tta_inputs(faces, 64, *norm, mode="crops")
    assert crops.shape == (10, 4, 3, 64, 64)
    boxes = crop_boxes(48)
    assert boxes[0] == (0, 0, 43) and boxes[3] == (5, 5, 43) and boxes[4] == (2, 2, 43)
    top, left, _ = boxes[3]  # bottom-right crop of the mirrored face: one resize, 43 px to 64
    np.testing.assert_array_equal(crops[8], face_inputs(faces[:, :, ::-1][:, top:, left:], 64, *norm))
    kept = tta_inputs(faces, 48, *norm, mode="crops", keep_crop_size=True)
    assert kept.shape == (10, 4, 3, 43, 43)  # for a model that resizes its input itself
    np.testing.assert_array_equal(kept[0], face_inputs(faces[:, :43, :43], 43, *norm))
    with pytest.raises(FERConfigError, match="'mirror'"):
        tta_inputs(faces, 64, *norm, mode="mirror")


@pytest.mark.parametrize("alphas", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)], ids=["mixup", "cutmix", "both"])
@pytest.mark.parametrize("soft", [False, True], ids=["labels", "soft-labels"])
def test_mixing_gives_each_image_the_same_mix_of_labels_as_of_pixels(alphas, soft):
    # image k is a flat gray of value k and has label k, so a mixed image's mean value must
    # equal the label mix's expected k: the labels follow the pixels (blend or pasted box)
    torch.manual_seed(3)
    images = torch.arange(7.0).view(7, 1, 1, 1).expand(7, 3, 16, 16).contiguous()
    labels = torch.eye(7) if soft else torch.arange(7)
    for _ in range(5):
        mixed, targets = batch_mixing(7, *alphas)(images, labels)
        assert mixed.shape == images.shape and targets.shape == (7, 7)
        torch.testing.assert_close(targets.sum(dim=1), torch.ones(7))
        assert (targets > 0).sum(dim=1).max() <= 2  # each image mixes with one other
        torch.testing.assert_close(mixed.mean(dim=(1, 2, 3)), targets @ torch.arange(7.0))
    assert not torch.equal(targets, torch.eye(7))


def test_no_mixing_at_alpha_zero_and_a_clear_error_below():
    assert batch_mixing(7) is None
    with pytest.raises(FERConfigError, match="mixup_alpha and cutmix_alpha must be >= 0, got -1"):
        batch_mixing(7, mixup_alpha=-1)
