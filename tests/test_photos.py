"""Photos in the wild: detection, per-face results, bad input, batch output, Grad-CAM, widgets, webcam."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import face_photo
from fer_utils.cli import main
from fer_utils.core.errors import FERConfigError, FERDataError
from fer_utils.faces.detection import FaceBox, HaarDetector, YuNetDetector, create_detector, crop_face
from fer_utils.predict.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(untrained_checkpoint):
    return Predictor.from_checkpoint(untrained_checkpoint)


def test_yunet_finds_faces_where_they_are_with_landmarks():
    boxes = YuNetDetector().detect(face_photo([(60, 100), (400, 200)]))
    assert len(boxes) == 2
    centres = sorted((b.x + b.w / 2, b.y + b.h / 2) for b in boxes)
    assert abs(centres[0][0] - 140) < 25 and abs(centres[1][0] - 480) < 25
    for box in boxes:
        assert 0 < box.score <= 1 and len(box.landmarks) == 5
        (rx, ry), (lx, _) = box.landmarks[:2]
        assert box.x < rx < lx < box.x + box.w  # the person's right eye is on the image's left
        assert box.y < ry < box.y + box.h / 2 and abs(box.eye_angle()) < 10  # upright face: about level eyes


def rotated(image: np.ndarray, angle: float, centre: tuple[float, float]) -> np.ndarray:
    import cv2

    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    return cv2.warpAffine(image, matrix, image.shape[::-1], borderValue=110)


@pytest.mark.parametrize("angle", [-15, 15])
def test_yunet_landmarks_follow_a_tilted_face(angle):
    photo = face_photo([(240, 150)])
    upright = YuNetDetector().detect(photo)[0].eye_angle()
    tilted = YuNetDetector().detect(rotated(photo, angle, (320, 230)))[0].eye_angle()
    assert tilted - upright == pytest.approx(-angle, abs=10)  # cv2 turns counter-clockwise; cartoon landmarks are rough


@pytest.mark.parametrize("tilt", [-30, 20])
def test_alignment_levels_the_eyes_in_the_crop(tilt):
    gray = np.full((300, 300), 100, np.uint8)
    centre, half = np.array([150.0, 150.0]), 40
    direction = np.array([np.cos(np.radians(tilt)), np.sin(np.radians(tilt))])
    eyes = [centre - half * direction, centre + half * direction]
    for x, y in eyes:
        gray[round(y) - 4 : round(y) + 5, round(x) - 4 : round(x) + 5] = 255  # two bright "eyes"
    box = FaceBox(90, 90, 120, 120, 1.0, landmarks=tuple(map(tuple, eyes)), crop_scale=1.0)
    assert box.eye_angle() == pytest.approx(tilt)
    for align, level in ((True, True), (False, False)):
        crop = crop_face(gray, box, size=120, align=align)
        ys, xs = np.nonzero(crop > 200)
        left, right = ys[xs < 60].mean(), ys[xs >= 60].mean()
        assert (abs(left - right) < 2) == level  # aligned: both eyes on one row; not aligned: still tilted
        assert abs(xs.mean() - 59.5) < 2 and abs(ys.mean() - 59.5) < 2  # rotated about the face centre


def test_crop_is_the_box_times_its_scale_and_pads_at_borders():
    gray = np.zeros((200, 200), np.uint8)
    gray[50:150, 60:160] = 255  # the "face" box
    for scale in (1.03, 1.2):
        crop = crop_face(gray, FaceBox(60, 50, 100, 100, 1.0, crop_scale=scale))
        assert crop.shape == (48, 48)
        assert crop.mean() / 255 == pytest.approx(1 / scale**2, abs=0.03)  # dark margin all round
        assert crop[24, 0] < 128 and crop[24, 23] == 255
    corner = crop_face(gray, FaceBox(-10, -10, 40, 40, 1.0))  # past the border: edge-padded, not an error
    assert corner.shape == (48, 48)


def test_haar_is_still_there_where_opencv_ships_it(monkeypatch, untrained_checkpoint, capsys, tmp_path):
    try:
        boxes = HaarDetector().detect(face_photo([(60, 100), (400, 200)]))
    except FERConfigError:
        boxes = None  # OpenCV 5 (no cascades): checked below
    if boxes is not None:
        assert len(boxes) == 2 and boxes[0].landmarks == ()
    import cv2

    monkeypatch.delattr(cv2, "CascadeClassifier", raising=False)
    with pytest.raises(FERConfigError, match="--detector yunet"):
        create_detector("haar")
    with pytest.raises(FERConfigError, match="yunet, haar"):
        create_detector("mtcnn")
    Image.fromarray(face_photo()).save(tmp_path / "x.png")
    args = [
        "predict",
        "--detector",
        "haar",
        "--checkpoint",
        str(untrained_checkpoint),
        "--quiet",
        str(tmp_path / "x.png"),
    ]
    assert main(args) == 1
    assert "--detector yunet" in capsys.readouterr().err  # one line before any work, not a traceback per photo


def test_onnx_runtime_gives_pytorch_probabilities_and_is_cached(
    untrained_checkpoint, small_faces, tmp_path, monkeypatch
):
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path))
    fast = Predictor.from_checkpoint(untrained_checkpoint, runtime="onnx")
    torch_side = Predictor.from_checkpoint(untrained_checkpoint, runtime="torch")
    faces = list(small_faces.images)
    assert np.abs(fast.predict_arrays(faces) - torch_side.predict_arrays(faces)).max() < 1e-4
    cached = list((tmp_path / "onnx").glob("*.onnx"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    again = Predictor.from_checkpoint(untrained_checkpoint)  # auto on a CPU: ONNX Runtime, same cache entry
    assert again.runtime == "onnx"
    again.predict_arrays(faces[:1])
    assert list((tmp_path / "onnx").glob("*.onnx")) == cached and cached[0].stat().st_mtime_ns == stamp
    fast.tta = torch_side.tta = "crops"  # TTA views go through the same averaging in both runtimes
    assert np.abs(fast.predict_arrays(faces) - torch_side.predict_arrays(faces)).max() < 1e-4


def test_predict_photo_returns_every_face_with_all_probabilities(predictor, tmp_path):
    path = tmp_path / "two.jpg"
    Image.fromarray(face_photo([(60, 100), (400, 200)])).convert("RGB").save(path)
    result = predictor.predict_image(path)
    assert result.detected and len(result.faces) == 2 and result.reason is None
    for face in result.faces:
        assert set(face.probabilities) == set(predictor.classes)
        assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert face.face.shape == (48, 48) and face.box.w > 50


def test_photo_without_a_face_is_an_empty_result_not_an_error(predictor):
    result = predictor.predict_image(np.full((300, 400), 120, np.uint8))
    assert result.faces == [] and result.reason == "no face found"


def test_small_images_are_taken_as_face_crops(predictor, small_faces):
    result = predictor.predict_image(small_faces.images[0])
    assert not result.detected and len(result.faces) == 1 and result.faces[0].box is None
    forced = predictor.predict_image(face_photo(), detect=False)
    assert len(forced.faces) == 1 and forced.faces[0].box is None


def test_inputs_of_every_kind_agree(predictor, tmp_path, small_faces):
    face = small_faces.images[3]
    Image.fromarray(face).save(tmp_path / "f.png")
    rgb = np.repeat(face[..., None], 3, axis=2)
    outputs = [
        predictor.predict_image(s).faces[0].probabilities["happy"]
        for s in (
            tmp_path / "f.png",
            (tmp_path / "f.png").read_bytes(),
            Image.fromarray(face),
            face,
            rgb,
            face.astype(np.float32) / 255,
        )
    ]
    assert max(outputs) - min(outputs) < 1e-3


def test_exif_rotation_is_honoured_before_detection(predictor, tmp_path):
    photo = face_photo([(240, 150)])
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated; viewers turn it back
    Image.fromarray(np.rot90(photo, k=-1)).save(tmp_path / "rotated.jpg", exif=exif)
    assert len(predictor.predict_image(tmp_path / "rotated.jpg").faces) == 1


@pytest.mark.parametrize("mode", ["CMYK", "RGBA", "P", "I;16"])
def test_photo_modes(predictor, tmp_path, mode):
    photo = face_photo()
    image = Image.fromarray(photo.astype(np.uint16) * 257) if mode == "I;16" else Image.fromarray(photo).convert(mode)
    path = tmp_path / f"p.{'tiff' if mode in ('CMYK', 'I;16') else 'png'}"
    image.save(path)
    assert len(predictor.predict_image(path).faces) == 1


def test_bad_files_are_reported_in_batches(predictor, tmp_path):
    Image.fromarray(face_photo()).save(tmp_path / "good.png")
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "cut.png").write_bytes((tmp_path / "good.png").read_bytes()[:200])
    Image.new("L", (10, 300)).save(tmp_path / "thin.png")
    results, skipped = predictor.predict_images(sorted(tmp_path.iterdir()))
    assert [r.source.rsplit("/", 1)[1] for r in results] == ["good.png", "thin.png"]
    assert results[1].faces == [] and "too small" in results[1].reason
    assert {s.source.rsplit("/", 1)[1] for s in skipped} == {"text.jpg", "cut.png"}
    with pytest.raises(FERDataError, match="not an image"):
        predictor.predict_image(tmp_path / "text.jpg")


def test_decompression_bomb_is_refused(predictor, tmp_path, monkeypatch):
    Image.new("L", (400, 400)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(FERDataError, match="too large"):
        predictor.predict_image(tmp_path / "bomb.png")


def test_gradcam_maps_for_faces(predictor, small_faces):
    maps = predictor.gradcam(small_faces.images[:3])
    assert maps.shape == (3, 48, 48) and maps.min() >= 0 and maps.max() <= 1
    chosen = predictor.gradcam(small_faces.images[:1], [4])
    assert chosen.shape == (1, 48, 48)


def test_batched_gradcam_and_predictions_match_one_batch(predictor, small_faces):
    """Grad-CAM and predictions run in bounded batches for memory; the answers must not depend on it."""
    from fer_utils.model.gradcam import gradcam_maps

    faces = small_faces.images[:7]
    x = predictor.input_tensor(faces)
    # maps in 0..1. An untrained model's gradients are tiny, and the CPU's convolution kernels differ
    # with the batch size, so its maps move by up to about 0.001 between batchings (seen once in CI at
    # 1e-4); faces mixed up between batches would move them by tenths
    assert np.allclose(
        gradcam_maps(predictor.model, x, batch_size=2), gradcam_maps(predictor.model, x, batch_size=64), atol=1e-2
    )
    one_by_one = np.concatenate([predictor.predict_arrays(faces[i : i + 1]) for i in range(len(faces))])
    assert np.allclose(
        predictor.predict_arrays(np.concatenate([faces] * 6)), np.concatenate([one_by_one] * 6), atol=1e-5
    )


def test_face_part_share_locates_the_mass_of_a_map():
    from fer_utils.model.gradcam import face_part_share

    mouth_only = np.zeros((1, 96, 96))
    mouth_only[0, 70:80, 40:60] = 1  # inside the mouth box (rows 30-44, columns 12-36 of 48, doubled)
    share = face_part_share(mouth_only)
    assert share["mouth"] == pytest.approx(1) and share["eyes and brows"] == 0
    assert face_part_share(np.ones((2, 48, 48)))["mouth"] == pytest.approx(share["area"] - 560 / 2304)


def test_cli_predict_writes_csv_json_and_annotations(untrained_checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(face_photo([(60, 100), (400, 200)])).save(photos / "two.png")
    Image.fromarray(np.full((300, 300), 90, np.uint8)).save(photos / "wall.png")
    (photos / "bad.jpg").write_bytes(b"\xff\xd8\xff broken")
    ckpt = str(untrained_checkpoint)
    assert (
        main(
            [
                "predict",
                str(photos),
                "--checkpoint",
                ckpt,
                "--csv",
                str(tmp_path / "out.csv"),
                "--annotate",
                str(tmp_path / "ann"),
            ]
        )
        == 0
    )
    table = pd.read_csv(tmp_path / "out.csv")
    faces = table[table["file"].str.endswith("two.png")]
    assert len(faces) == 2 and {"box_x", "box_y", "box_w", "box_h", "detection_score", "label", "p_happy"} <= set(table)
    assert table.loc[table["file"].str.endswith("wall.png"), "reason"].item() == "no face found"
    assert table["reason"].astype(str).str.contains("skipped").sum() == 1
    assert (tmp_path / "ann" / "two.jpg").is_file()
    assert (
        main(["predict", str(photos / "two.png"), "--checkpoint", ckpt, "--json", str(tmp_path / "o.json"), "--tta"])
        == 0
    )
    data = json.loads((tmp_path / "o.json").read_text())
    assert len(data["images"][0]["faces"]) == 2 and data["classes"][0] == "angry"
    rows = pd.DataFrame(data["rows"])  # the CSV's rows, in the one schema
    assert list(rows.columns) == [c for c in table.columns if c != "reason"] and len(rows) == 2
    assert main(["predict", str(photos / "bad.jpg"), "--checkpoint", ckpt]) == 1
    assert "no image could be read" in capsys.readouterr().err


def test_webcam_loop_annotates_frames(predictor):
    from fer_utils.deploy.webcam import run_webcam

    frame = np.repeat(face_photo()[..., None], 3, axis=2)

    class FakeCamera:
        def __init__(self):
            self.frames = [frame, frame, frame]
            self.released = False

        def read(self):
            return (True, self.frames.pop()) if self.frames else (False, None)

        def release(self):
            self.released = True

    camera = FakeCamera()
    results = run_webcam(predictor, capture=camera, show=False)
    assert len(results) == 3 and all(len(r.faces) == 1 for r in results) and camera.released
    assert {r.faces[0].track for r in results} == {0}  # one person, tracked across frames


def test_real_photo_face_is_found_and_cropped(predictor):
    skimage_data = pytest.importorskip("skimage.data")
    photo = skimage_data.astronaut()  # NASA portrait, public domain; ships inside scikit-image
    result = predictor.predict_image(photo)
    assert len(result.faces) == 1
    box = result.faces[0].box
    assert 150 < box.x + box.w / 2 < 260 and 60 < box.y + box.h / 2 < 160  # her face, upper centre-left


def test_yunet_file_comes_from_the_package_else_a_checked_download(tmp_path, monkeypatch):
    import fer_utils.faces.detection as detection

    monkeypatch.setenv("FER_YUNET_MODEL", str(tmp_path / "missing.onnx"))
    with pytest.raises(FERConfigError, match="missing.onnx: no such file"):
        detection.yunet_model_path()
    monkeypatch.delenv("FER_YUNET_MODEL")
    assert detection.yunet_model_path() == detection.PACKAGED_YUNET
    good = detection.PACKAGED_YUNET.read_bytes()
    monkeypatch.setattr(detection, "PACKAGED_YUNET", tmp_path / "not-packaged.onnx")  # a slimmed install
    served = {"bytes": b"not the model"}
    monkeypatch.setattr(detection.urllib.request, "urlretrieve", lambda url, to: Path(to).write_bytes(served["bytes"]))
    with pytest.raises(FERConfigError, match="wrong SHA-256"):
        detection.yunet_model_path(tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())  # nothing half-trusted left behind
    served["bytes"] = good
    path = detection.yunet_model_path(tmp_path / "cache")
    assert path.parent == tmp_path / "cache" and path.read_bytes() == good


@pytest.mark.parametrize("tilt", [-20, 25])
def test_a_tilted_head_is_measured_near_its_tilt_and_cropped_level(tilt):
    from fer_utils.course import sample_photo
    from fer_utils.data.images import to_gray
    from fer_utils.faces.detection import create_detector, crop_face

    detector = create_detector("yunet")
    photo = Image.open(sample_photo()).convert("RGB")
    own = detector.refine_landmarks(to_gray(photo), detector.detect(to_gray(photo))[0]).eye_angle()
    tilted = to_gray(photo.rotate(tilt, fillcolor=(128, 128, 128)))  # counter-clockwise: the eye line reads -tilt
    first = detector.detect(tilted)[0]
    refined = detector.refine_landmarks(tilted, first)
    expected = own - tilt
    assert abs(refined.eye_angle() - expected) < 6  # YuNet's first landmarks read within a few degrees of level
    assert abs(refined.eye_angle() - expected) < abs(first.eye_angle() - expected) / 2
    aligned = crop_face(tilted, refined, size=320, scale=2.0)  # levelled, with the context YuNet needs
    again = detector.refine_landmarks(aligned, detector.detect(aligned)[0])
    assert abs(again.eye_angle()) < abs(tilt) / 3  # measured: 0.3-7.5 degrees left of 10-25 (noise of a few degrees)
