"""Training: a config dataclass holding every hyperparameter, and ``train()`` that fits a model.

Each epoch is seeded from ``seed`` and the epoch number, and the learning rate is a pure
function of the step, so resuming from ``last.safetensors`` replays exactly what an
uninterrupted run would have done. ``best.safetensors`` keeps the best epoch on validation.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fer_utils.core.atomic import write_text_atomic
from fer_utils.core.config import (
    TrainConfig,
)
from fer_utils.core.errors import FERCheckpointError, FERConfigError, FERTrainingError
from fer_utils.core.interrupts import stop_signals_as_interrupt
from fer_utils.data.faceset import FaceSet, class_weights
from fer_utils.model.assembly import load_model_weights, model_from_checkpoint
from fer_utils.model.checkpoints import Checkpoint, save_checkpoint
from fer_utils.model.devices import resolve_device, resolve_precision
from fer_utils.model.factory import arch_spec, build_model, set_backbone_trainable
from fer_utils.runtime.description import ModelDescription
from fer_utils.train.distill import distillation_targets, load_teacher
from fer_utils.train.distributed import (
    World,
    broadcast_from_main,
    join_processes,
    launched_world,
    leave_processes,
    sum_across,
)
from fer_utils.train.runs import RunState, check_resume_folder, claim_run_folder, restore_run
from fer_utils.train.steps import (
    _is_better,
    _refuse_non_finite,
    build_train_loader,
    lr_factor,
    make_optimizer,
    train_one_epoch,
    validate,
)
from fer_utils.train.transforms import batch_mixing


@dataclass
class TrainResult:
    """What ``train()`` leaves behind."""

    model: nn.Module  # the best model (weights of best.safetensors), in eval mode
    history: pd.DataFrame  # one row per epoch
    out_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int
    checkpoint: Checkpoint  # metadata of best.safetensors
    interrupted: bool = False
    stopped_early: bool = False


def model_description(config: TrainConfig, classes: tuple[str, ...]) -> ModelDescription:
    """What the trained model sees (classes, input size, normalization), from the training config."""
    spec = arch_spec(config.arch)
    return ModelDescription(config.arch, tuple(classes), config.image_size, spec.mean, spec.std)


def train(
    config: TrainConfig,
    train_set: FaceSet,
    val_set: FaceSet,
    out_dir: str | os.PathLike,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
    data_info: dict[str, Any] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], bool | None] | None = None,
) -> TrainResult:
    """Train a model on ``train_set``, selecting the best epoch on ``val_set``.

    Writes to ``out_dir``: ``best.safetensors`` (best validation epoch), ``last.safetensors``
    (after every epoch, with optimizer state: pass it as ``resume`` to continue),
    ``history.csv``. Ctrl-C stops after saving nothing half-written; the last finished epoch
    stays resumable. A NaN/inf loss stops with FERTrainingError. ``on_epoch_end`` gets each
    epoch's history row; returning True stops training there (like early stopping).
    Under torchrun, each process trains on its share and rank 0 alone writes files.
    ``out_dir`` holds one run: while this trains, another process is refused it, and ``resume``
    must be a checkpoint of that folder. SIGTERM stops like Ctrl-C.
    """
    config.validate()
    check_resume_folder(out_dir, resume)  # every rank refuses, so none waits for a rank 0 that stopped
    folder = claim_run_folder(out_dir, resume) if launched_world().is_main else contextlib.nullcontext()
    with folder, stop_signals_as_interrupt():
        return _train_in_folder(config, train_set, val_set, Path(out_dir), resume, progress, data_info, on_epoch_end)


@dataclass
class _Run:
    """Everything one training run holds while it runs: built once by ``_prepare_run``."""

    config: TrainConfig
    world: World
    device: torch.device
    model: nn.Module  # the plain model: what the optimizer trains
    net: nn.Module  # what trains: the model, compiled and/or wrapped for DDP
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    loader: DataLoader
    reseed: Callable[[int], None]
    precision: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    description: ModelDescription
    data: dict[str, Any]  # what the checkpoints record about the data (``data_info``)
    state: RunState
    paths: dict[str, Path]
    progress: bool
    ema: AveragedModel | None = None  # the weight average (``ema_decay``), updated after every step
    mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None  # mixup/CutMix

    @property
    def selected(self) -> nn.Module:
        """The model validated, selected and saved as best: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def schedule(self, step: int) -> float:
        total = len(self.loader) * self.config.epochs
        warmup = round(self.config.warmup_epochs * len(self.loader))
        return self.config.lr * lr_factor(step, total, warmup, self.config.scheduler)


def _prepare_run(
    config: TrainConfig,
    train_set: FaceSet,
    val_set: FaceSet,
    out_dir: Path,
    resume: str | os.PathLike | None,
    progress: bool,
    data_info: dict[str, Any] | None,
) -> _Run:
    """Check the data, join the process group, restore a resumed run, build model, optimizer,
    loss and loader on the right device."""
    train_set = _checked_train_set(config, train_set, val_set)
    world = launched_world()
    device = _joined_device(config, world)
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    classes = train_set.classes
    description = model_description(config, classes)
    torch.manual_seed(config.seed)  # the classifier's initial weights
    checkpoint, state = restore_run(resume, config, classes) if resume is not None else (None, RunState())

    model, optimizer, ema = _model_and_optimizer(config, len(classes), checkpoint, resume, device)
    net = torch.compile(model) if config.compile else model
    if world.distributed:
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    precision = resolve_precision(config.precision, device)
    scaler = torch.amp.GradScaler(device.type) if precision == torch.float16 else None  # fp16 only: bf16 needs none
    weights = class_weights(train_set).to(device) if config.class_weighting == "loss" else None
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing)
    loader, reseed = build_train_loader(train_set, config, world, device)
    paths = {name: out_dir / f for name, f in RUN_FILES.items()}
    return _Run(
        config, world, device, model, net, optimizer, criterion, loader, reseed, precision, scaler, description,
        data_info or {}, state,
        paths, progress and world.is_main, ema, batch_mixing(len(classes), config.mixup_alpha, config.cutmix_alpha),
    )  # fmt: skip


def _checked_train_set(config: TrainConfig, train_set: FaceSet, val_set: FaceSet) -> FaceSet:
    """The training faces, refused when empty or of other classes than the validation faces, and
    with the teacher's soft labels mixed in when distilling."""
    if train_set.classes != val_set.classes:
        raise FERConfigError("train and validation sets have different class lists")
    if len(train_set) == 0 or len(val_set) == 0:
        raise FERConfigError(f"need faces to train and validate on, got {len(train_set)} and {len(val_set)}")
    if config.teacher:
        train_set = distillation_targets(train_set, load_teacher(config.teacher, train_set), config.distill_weight)
    return train_set


def _joined_device(config: TrainConfig, world: World) -> torch.device:
    """This process's device (one GPU per process under torchrun), after joining the process group."""
    if world.distributed and config.freeze_backbone_epochs:
        raise FERConfigError("freeze_backbone_epochs needs a single process: DDP cannot unfreeze layers mid-run")
    device = resolve_device(config.device)
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    join_processes(world, device)
    return device


def _model_and_optimizer(
    config: TrainConfig, num_classes: int, checkpoint: Checkpoint | None, resume: Any, device: torch.device
) -> tuple[nn.Module, torch.optim.Optimizer, AveragedModel | None]:
    """The model (built on the CPU, where weights load, then moved), its optimizer and the weight
    average, each restored from ``checkpoint`` when resuming."""
    model = build_model(
        config.arch,
        num_classes,
        pretrained=config.pretrained if resume is None else False,
        dropout=config.dropout,
        pretrained_member=config.pretrained_member,
    )
    if checkpoint is not None:
        load_model_weights(model, checkpoint)
    model = model.to(device, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    optimizer = make_optimizer(model, config)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint.optimizer_state)  # moves the state to the model's device
    ema = None
    if config.ema_decay:  # averages the buffers too: BatchNorm statistics that match the averaged weights
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
        if checkpoint is not None:
            if checkpoint.ema_state is None:
                raise FERCheckpointError(f"{resume}: holds no weight average (ema_decay) to continue")
            ema.load_state_dict(checkpoint.ema_state)
    return model, optimizer, ema


RUN_FILES = {"best": "best.safetensors", "last": "last.safetensors", "history": "history.csv"}
"""What a run folder holds: the best epoch's model, the last epoch's (with optimizer state, to
resume from) and one history row per epoch."""


def _run_epoch(run: _Run, epoch: int, val_set: FaceSet) -> dict[str, Any]:
    """Train one epoch, validate on rank 0, and return its history row."""
    started = time.perf_counter()
    config = run.config
    run.reseed(epoch)  # this epoch's shuffle and augmentation depend only on (seed, epoch): exact resume
    set_backbone_trainable(run.model, epoch >= config.freeze_backbone_epochs)
    stats = train_one_epoch(
        run.net,
        run.loader,
        run.optimizer,
        run.criterion,
        run.schedule,
        epoch * len(run.loader),
        run.device,
        run.precision,
        run.scaler,
        config.channels_last,
        run.progress,
        desc=f"epoch {epoch + 1}/{config.epochs}",
        after_step=None if run.ema is None else lambda: run.ema.update_parameters(run.model),
        mix=run.mix,
    )
    loss_sum, correct, seen = sum_across(run.world, [stats.loss, stats.correct, stats.images], run.device)
    train_seconds = time.perf_counter() - started
    # Validation runs once, on rank 0, with the plain model (or its weight average); the others
    # wait for its verdict. With an average, the trained weights' accuracy is kept beside it.
    metrics = broadcast_from_main(run.world, _validate_run(run, val_set) if run.world.is_main else None)
    _refuse_non_finite(run.selected, metrics, epoch, config, run.paths["last"])
    return {
        "epoch": epoch + 1,
        "train_loss": loss_sum / seen,
        "train_accuracy": correct / seen,
        **metrics,
        "lr": stats.lr,
        "seconds": time.perf_counter() - started,
        "train_images_per_s": seen / train_seconds,
    }


def _validate_run(run: _Run, val_set: FaceSet) -> dict[str, float]:
    metrics = validate(run.selected, val_set, run.description, run.config.eval_batch_size)
    if run.ema is not None:
        metrics["raw_val_accuracy"] = validate(run.model, val_set, run.description, run.config.eval_batch_size)[
            "val_accuracy"
        ]
    return metrics


def _record_epoch(run: _Run, row: dict[str, Any]) -> bool:
    """Add ``row`` to the run's state and save (rank 0): best (if improved), last, history.
    Returns whether this epoch is the best so far."""
    state, config = run.state, run.config
    state.history.append(row)
    state.next_epoch = row["epoch"]
    improved = _is_better(row[config.monitor], state.best_value, config.monitor)
    if improved:
        state.best_value, state.best_epoch, state.bad_epochs = row[config.monitor], row["epoch"], 0
    else:
        state.bad_epochs += 1
    if run.world.is_main:
        saved = {"config": config.to_dict(), "metrics": row, "extra": {"data": run.data}}
        if improved:
            save_checkpoint(
                run.paths["best"], run.selected, run.description, **saved | {"metrics": {**row, "split": "val"}}
            )
        save_checkpoint(
            run.paths["last"],
            run.model,
            run.description,
            **saved,
            optimizer=run.optimizer,
            training_state=state.to_meta(),
            ema=run.ema,
        )
        write_text_atomic(run.paths["history"], pd.DataFrame(state.history).to_csv(index=False))
    if run.progress:
        tqdm.write(
            f"epoch {row['epoch']}/{config.epochs}: train loss {row['train_loss']:.3f} "
            f"acc {row['train_accuracy']:.3f} | val loss {row['val_loss']:.3f} "
            f"acc {row['val_accuracy']:.3f} macro-F1 {row['val_macro_f1']:.3f} | "
            f"{row['seconds']:.0f}s" + (" *best*" if improved else "")
        )
    return improved


def _interrupted_note(run: _Run) -> str:
    done = len(run.state.history)
    if not done:
        return "interrupted before the first epoch finished"
    return f"interrupted after {done} finished epoch(s); continue with resume={str(run.paths['last'])!r}"


def _dead_worker(err: RuntimeError, run: _Run) -> FERTrainingError | None:
    """A FERTrainingError for a killed DataLoader worker (out of memory, a signal), else None."""
    if "DataLoader worker" not in str(err):
        return None
    kept = (
        f"the last finished epoch is kept: continue with resume={str(run.paths['last'])!r}"
        if run.state.history
        else "no epoch had finished"
    )
    return FERTrainingError(
        f"a data-loading worker died ({str(err).splitlines()[0]}); this is usually the machine running out of "
        f"memory. Use fewer workers (num_workers, now {run.config.num_workers}; 0 loads in the main process); {kept}"
    )


def _train_in_folder(
    config: TrainConfig,
    train_set: FaceSet,
    val_set: FaceSet,
    out_dir: Path,
    resume: str | os.PathLike | None,
    progress: bool,
    data_info: dict[str, Any] | None,
    on_epoch_end: Callable[[dict[str, Any]], bool | None] | None,
) -> TrainResult:
    """``train`` once the run folder is this process's (see ``train``): prepare, then per epoch
    train + validate, record and save, until the last epoch, a stop, or Ctrl-C/SIGTERM."""
    run = _prepare_run(config, train_set, val_set, out_dir, resume, progress, data_info)
    interrupted = stopped_early = False
    epochs = range(run.state.next_epoch, config.epochs)
    bar = tqdm(epochs, desc="epochs", disable=not run.progress, unit="epoch", initial=epochs.start, total=config.epochs)
    try:
        for epoch in bar:
            row = _run_epoch(run, epoch, val_set)
            _record_epoch(run, row)
            bar.set_postfix(val_acc=f"{row['val_accuracy']:.3f}", best=run.state.best_epoch)
            if on_epoch_end is not None and on_epoch_end(row):
                break
            if config.patience and run.state.bad_epochs >= config.patience:
                stopped_early = True
                if run.progress:
                    tqdm.write(f"early stop: no improvement in {config.monitor} for {config.patience} epochs")
                break
        broadcast_from_main(run.world, None)  # all processes wait until rank 0 has written its files
    except KeyboardInterrupt:
        interrupted = True
        if run.progress:
            tqdm.write(_interrupted_note(run))
        if not run.state.history:
            raise
    except RuntimeError as err:
        if (dead := _dead_worker(err, run)) is None:
            raise
        raise dead from None
    finally:
        bar.close()
        leave_processes(run.world)

    best_model, best_checkpoint = model_from_checkpoint(run.paths["best"], expect_classes=train_set.classes)
    return TrainResult(
        model=best_model,
        history=pd.DataFrame(run.state.history),
        out_dir=out_dir,
        best_checkpoint=run.paths["best"],
        last_checkpoint=run.paths["last"],
        best_epoch=run.state.best_epoch,
        checkpoint=best_checkpoint,
        interrupted=interrupted,
        stopped_early=stopped_early,
    )
