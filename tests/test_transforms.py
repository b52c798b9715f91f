import numpy as np
import pytest
import torch

from fer_utils.errors import FERConfigError
from fer_utils.preprocess import crop_boxes, face_inputs, tta_inputs
from fer_utils.transforms import eval_transform, train_transform


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
