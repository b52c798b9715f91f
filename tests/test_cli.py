"""The fer command: end to end on tiny synthetic data, and one-line errors with exit code 1."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import save_class_folders
from fer_utils.cli import main
from fer_utils.model.checkpoints import read_checkpoint_meta

QUICK = ["--epochs", "1", "--image-size", "32", "--no-pretrained", "--batch-size", "32", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--data", "synthetic:0.05", "--out", str(out), *QUICK]) == 0
    return out


def test_train_writes_checkpoint_metrics_history_and_figures(trained):
    for name in ("best.safetensors", "last.safetensors", "history.csv", "metrics.json"):
        assert (trained / name).is_file(), name
    figures = {p.name for p in (trained / "figures").iterdir()}
    assert figures == {"training_curves.png", "class_distribution.png", "samples.png", "confusion_matrix.png"}
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["tta_none"]["split"] == "test" and 0 <= metrics["tta_flip"]["accuracy"] <= 1
    meta = read_checkpoint_meta(trained / "best.safetensors")  # the checkpoint carries its own scores
    assert meta["evaluation"]["tta_flip"]["accuracy"] == metrics["tta_flip"]["accuracy"]
    assert meta["config"]["epochs"] == 1 and "git_commit" in meta["data"]


def test_evaluate_json(trained, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--data",
                "synthetic:0.05",
                "--checkpoint",
                str(trained / "best.safetensors"),
                "--split",
                "val",
                "--tta",
                "flip",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert data["split"] == "val" and data["tta"] == "flip" and len(data["confusion_matrix"]) == 7
    assert "accuracy" in capsys.readouterr().out


def test_predict_images_and_folders(trained, tmp_path, small_faces, capsys):
    root = save_class_folders(tmp_path / "imgs", small_faces)
    (root / "happy" / "broken.png").write_bytes(b"nope")
    out = tmp_path / "pred.json"
    assert main(["predict", str(root), "--checkpoint", str(trained / "best.safetensors"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert len(data["images"]) == 14 and len(data["skipped"]) == 1
    assert all(not image["detected"] and len(image["faces"]) == 1 for image in data["images"])  # 48 px = face crops
    first = data["images"][0]["faces"][0]
    assert set(first["probabilities"]) == set(data["classes"])
    assert sum(first["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert "broken.png" in capsys.readouterr().err


def test_data_info_reports_counts(class_folder_dataset, capsys):
    assert main(["data", "info", str(class_folder_dataset), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "class-folders" and info["splits"]["all"]["happy"] == 2


def test_train_refuses_to_overwrite_a_model(trained, capsys):
    assert main(["train", "--data", "synthetic:0.05", "--out", str(trained), *QUICK]) == 1
    assert "already holds a trained model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "info", "no/such/dir"], "no/such/dir: no such file or folder"),
        (["train", "--data", "no/such.csv", "--out", "{tmp}/o"], "no/such.csv: no such file or folder"),
        (["evaluate", "--data", "synthetic", "--checkpoint", "{tmp}/missing.safetensors"], "checkpoint not found"),
        (["evaluate", "--data", "synthetic", "--checkpoint", "{tmp}/junk.safetensors"], "not a readable checkpoint"),
        (["predict", "{tmp}/junk.safetensors", "--checkpoint", "{tmp}/missing.safetensors"], "checkpoint not found"),
        (["train", "--data", "synthetic", "--lr", "-1", "--out", "{tmp}/o"], "lr must be a positive number"),
        (["train", "--data", "{tmp}", "--out", "{tmp}/o"], "no class folders found"),
    ],
)
def test_user_errors_exit_1_with_one_line(argv, message, tmp_path, capsys):
    (tmp_path / "junk.safetensors").write_text("junk")
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("fer: error:") and message in err and "\n" not in err


def test_console_script_prints_no_traceback(tmp_path):
    env = {**os.environ, "FER_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "fer_utils.cli", "data", "info", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "nothing: no such file or folder" in proc.stderr


def test_bad_flag_values_are_one_line_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "many"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert err == "fer: error: argument --epochs: invalid int value: 'many' (see `fer train --help`)"


def test_evaluate_compares_several_tta_modes_in_one_run(trained, capsys):
    args = ["evaluate", "--data", "synthetic:0.05", "--checkpoint", str(trained / "best.safetensors")]
    assert main([*args, "--split", "test", "--tta", "none", "flip", "crops"]) == 0
    out = capsys.readouterr().out
    assert "tta flip: accuracy" in out and "tta crops: accuracy" in out and "tta none:" not in out
