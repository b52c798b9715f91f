"""Model-behaviour tests: the library really learns, resumes exactly, and stops cleanly."""

import itertools

import numpy as np
import pytest
import torch

from fer_utils.core.errors import FERCheckpointError, FERConfigError, FERTrainingError
from fer_utils.data import load_dataset, synthetic_faces, training_splits
from fer_utils.model.checkpoints import load_checkpoint
from fer_utils.train.loop import TrainConfig, train
from fer_utils.train.steps import lr_factor

TINY = {
    "arch": "efficientnet-lite0",
    "pretrained": False,
    "image_size": 32,
    "batch_size": 32,
    "epochs": 2,
    "warmup_epochs": 0.5,
    "eval_batch_size": 64,
}


@pytest.fixture(scope="module")
def tiny_sets():
    return synthetic_faces(12, seed=10), synthetic_faces(4, seed=11)


@pytest.mark.slow
def test_synthetic_faces_are_learnable(tmp_path):
    # Measured: 0.64 validation accuracy after these 3 epochs (chance is 1/7 = 0.14).
    train_set, val_set = training_splits(load_dataset("synthetic"))
    config = TrainConfig(epochs=3, image_size=48, seed=0)
    result = train(config, train_set, val_set, tmp_path, progress=False)
    assert result.history["val_accuracy"].max() > 0.45
    assert result.history["train_loss"].iloc[-1] < result.history["train_loss"].iloc[0]
    assert (tmp_path / "best.safetensors").is_file() and (tmp_path / "history.csv").is_file()


def test_ctrl_c_leaves_a_checkpoint_whose_resume_replays_the_uninterrupted_run(tmp_path, tiny_sets):
    train_set, val_set = tiny_sets
    full = train(TrainConfig(**TINY), train_set, val_set, tmp_path / "full", progress=False)
    stopped = _train_interrupting_at_epoch(TrainConfig(**TINY), train_set, val_set, tmp_path / "b", epoch=2)
    assert stopped.interrupted and len(stopped.history) == 1
    assert load_checkpoint(tmp_path / "b" / "last.safetensors").meta["training_state"]["epoch"] == 0
    resumed = train(
        TrainConfig(**TINY),
        train_set,
        val_set,
        tmp_path / "b",
        resume=tmp_path / "b" / "last.safetensors",
        progress=False,
    )
    assert len(resumed.history) == 2
    cols = ["train_loss", "train_accuracy", "val_loss", "val_accuracy"]
    np.testing.assert_allclose(resumed.history[cols].to_numpy(), full.history[cols].to_numpy(), rtol=1e-4, atol=1e-5)


def test_a_run_from_an_ensemble_member_starts_from_that_member(tmp_path, tiny_sets, two_member_ensemble):
    packed, members = two_member_ensemble
    # the backbone stays frozen for the one epoch, so its convolutions are still the start's
    config = {**TINY, "pretrained": str(packed), "pretrained_member": 1, "epochs": 1, "freeze_backbone_epochs": 1}
    result = train(TrainConfig(**config), *tiny_sets, tmp_path / "run", progress=False)
    trained = load_checkpoint(result.best_checkpoint)
    assert torch.equal(trained.model_state["conv_stem.weight"], members[1].conv_stem.weight)
    assert trained.meta["config"]["pretrained_member"] == 1


def test_weight_average_is_selected_saved_and_resumed_exactly(tmp_path, tiny_sets):
    # ema_decay keeps an average of the weights: best.safetensors holds the average (what was
    # validated), last.safetensors the trained weights and the average, and a resumed run
    # continues both exactly as if it had never stopped.
    train_set, val_set = tiny_sets
    config = {**TINY, "ema_decay": 0.9, "epochs": 3}
    full = train(TrainConfig(**config), train_set, val_set, tmp_path / "full", progress=False)
    assert {"raw_val_accuracy", "val_accuracy"} <= set(full.history.columns)
    best = load_checkpoint(tmp_path / "full" / "best.safetensors")
    last = load_checkpoint(tmp_path / "full" / "last.safetensors")
    assert best.ema_state is None and last.ema_state is not None
    name = "classifier.weight" if "classifier.weight" in last.model_state else next(iter(last.model_state))
    if full.best_epoch == 3:
        torch.testing.assert_close(best.model_state[name], last.ema_state[f"module.{name}"])
    assert not torch.equal(last.model_state[name], last.ema_state[f"module.{name}"])

    _assert_resume_replays(full, config, tiny_sets, tmp_path / "b", ["train_loss", "val_loss", "raw_val_accuracy"])
    again = load_checkpoint(tmp_path / "b" / "last.safetensors").ema_state
    for key, value in last.ema_state.items():
        torch.testing.assert_close(again[key].float(), value.float(), rtol=1e-4, atol=1e-5)


def test_mixup_and_cutmix_change_the_training_and_resume_exactly(tmp_path, tiny_sets):
    train_set, val_set = tiny_sets
    mixed = {**TINY, "mixup_alpha": 0.4, "cutmix_alpha": 1.0}
    plain = train(TrainConfig(**TINY), train_set, val_set, tmp_path / "plain", progress=False)
    full = train(TrainConfig(**mixed), train_set, val_set, tmp_path / "full", progress=False)
    assert not np.allclose(full.history["train_loss"], plain.history["train_loss"])  # the batches were mixed
    _assert_resume_replays(full, mixed, tiny_sets, tmp_path / "b", ["train_loss", "train_accuracy", "val_loss"])


def test_resuming_an_averaged_run_needs_its_average(tmp_path, tiny_sets):
    train_set, val_set = tiny_sets
    one = {**TINY, "epochs": 1}
    train(TrainConfig(**one), train_set, val_set, tmp_path, progress=False)
    with pytest.raises(FERConfigError, match=r"cannot change ema_decay \(saved 0.0, asked 0.9\)"):
        train(
            TrainConfig(**{**one, "epochs": 2, "ema_decay": 0.9}), train_set, val_set, tmp_path,
            resume=tmp_path / "last.safetensors", progress=False,
        )  # fmt: skip


def _assert_resume_replays(full, config, sets, out, cols):
    """Train ``config`` in ``out``, press Ctrl-C at epoch 2, resume, and check that the history
    columns ``cols`` (and val_accuracy) match the uninterrupted run ``full``."""
    _train_interrupting_at_epoch(TrainConfig(**config), *sets, out, epoch=2)
    resumed = train(TrainConfig(**config), *sets, out, resume=out / "last.safetensors", progress=False)
    cols = [*cols, "val_accuracy"]
    np.testing.assert_allclose(resumed.history[cols].to_numpy(), full.history[cols].to_numpy(), rtol=1e-4, atol=1e-5)


def _train_interrupting_at_epoch(config, train_set, val_set, out, epoch):
    """Run train() and press Ctrl-C when ``epoch`` (1-based) starts."""
    import fer_utils.train.loop as training

    original = training.set_backbone_trainable
    calls = {"n": 0}

    def interrupt(model, trainable):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise KeyboardInterrupt
        original(model, trainable)

    training.set_backbone_trainable = interrupt
    try:
        return train(config, train_set, val_set, out, progress=False)
    finally:
        training.set_backbone_trainable = original


def test_seeded_runs_repeat(tmp_path, tiny_sets):
    train_set, val_set = tiny_sets
    config = TrainConfig(**{**TINY, "epochs": 1})
    a = train(config, train_set, val_set, tmp_path / "a", progress=False).history
    b = train(config, train_set, val_set, tmp_path / "b", progress=False).history
    assert a["train_loss"].iloc[0] == pytest.approx(b["train_loss"].iloc[0], rel=1e-5)


def test_nan_loss_stops_with_a_clear_message(tmp_path, tiny_sets):
    train_set, val_set = tiny_sets
    config = TrainConfig(**{**TINY, "lr": 1e30, "epochs": 1, "warmup_epochs": 0})
    with pytest.raises(FERTrainingError, match=r"loss became (nan|inf).*lower the learning rate"):
        train(config, train_set, val_set, tmp_path, progress=False)


def test_resume_refuses_checkpoints_without_training_state(tmp_path, tiny_sets):
    train_set, val_set = tiny_sets
    train(TrainConfig(**{**TINY, "epochs": 1}), train_set, val_set, tmp_path, progress=False)
    with pytest.raises(FERCheckpointError, match="holds no training state"):
        train(TrainConfig(**TINY), train_set, val_set, tmp_path, resume=tmp_path / "best.safetensors", progress=False)


def test_bad_hyperparameters_are_named():
    with pytest.raises(FERConfigError, match="optimizer must be one of"):
        TrainConfig(optimizer="adam2")
    with pytest.raises(FERConfigError, match="lr must be a positive number"):
        TrainConfig(lr=-1)


def test_lr_schedule_warms_up_then_decays():
    factors = [lr_factor(s, 100, 10, "cosine") for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[99] < 0.01 and all(a >= b for a, b in itertools.pairwise(factors[10:]))
    assert torch.tensor(factors).min() >= 0


def test_a_missing_gpu_is_one_line_not_a_traceback(tmp_path, capsys):
    from fer_utils.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", "--data", "synthetic:0.03", "--out", str(tmp_path), "--device", "cuda"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "fer: error: --device 'cuda': CUDA is not available on this machine; use --device cpu"
    assert not list(tmp_path.iterdir())
    with pytest.raises(FERConfigError, match="device must be one of"):
        TrainConfig(device="gpu")


def test_precision_choices_and_the_cpu_default():
    from fer_utils.model.devices import resolve_device, resolve_precision

    cpu = resolve_device("cpu")
    assert resolve_precision("auto", cpu) is None  # mixed precision measured slower on CPU: off
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(FERConfigError, match="precision must be one of"):
        resolve_precision("fp8", cpu)


def test_bf16_training_runs_and_saves_a_float32_checkpoint(tmp_path, tiny_sets):
    train_set, val_set = tiny_sets
    config = TrainConfig(**{**TINY, "epochs": 1, "precision": "bf16", "device": "cpu"})
    result = train(config, train_set, val_set, tmp_path, progress=False)
    assert np.isfinite(result.history["train_loss"]).all()
    state = load_checkpoint(tmp_path / "best.safetensors").model_state
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in state.values() if t.is_floating_point())
