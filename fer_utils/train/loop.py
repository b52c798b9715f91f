"""Training: a config dataclass holding every hyperparameter, and ``train()`` that fits a model.

Each epoch is seeded from ``seed`` and the epoch number, and the learning rate is a pure
function of the step, so resuming from ``last.safetensors`` replays exactly what an
uninterrupted run would have done. ``best.safetensors`` keeps the best epoch on validation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from fer_utils.core.atomic import write_text_atomic
from fer_utils.core.config import (
    RESUMABLE_CHANGES,
    TrainConfig,
    unsafe_changes,
)
from fer_utils.core.errors import FERCheckpointError, FERConfigError, FERTrainingError
from fer_utils.core.interrupts import stop_signals_as_interrupt
from fer_utils.data.faceset import FaceSet, TorchFaceDataset, class_weights, weighted_sampler
from fer_utils.model.checkpoints import (
    Checkpoint,
    ModelCard,
    load_checkpoint,
    load_model_weights,
    model_from_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from fer_utils.model.devices import autocast, resolve_device, resolve_precision
from fer_utils.model.factory import arch_spec, build_model, set_backbone_trainable
from fer_utils.train.distill import distillation_targets, load_teacher
from fer_utils.train.distributed import World, from_main, join, launched_world, leave, sum_across
from fer_utils.train.evaluation import evaluate_model
from fer_utils.train.runs import check_resume_folder, claim_run_folder
from fer_utils.train.transforms import batch_mixing, train_transform


def _no_training_state(path: str | os.PathLike) -> FERCheckpointError:
    return FERCheckpointError(
        f"{path}: holds no training state; resume from the last.safetensors that training writes, "
        "not from best.safetensors"
    )


def _refuse_unsafe_changes(path: str | os.PathLike, saved: TrainConfig, wanted: TrainConfig) -> None:
    """FERConfigError naming every setting a resumed run may not change (see ``RESUMABLE_CHANGES``)."""
    refused = unsafe_changes(saved, wanted)
    if refused:
        raise FERConfigError(
            f"{path}: a resumed run keeps its saved settings; cannot change "
            + ", ".join(f"{k} (saved {a!r}, asked {b!r})" for k, (a, b) in refused.items())
            + f". Only {', '.join(sorted(RESUMABLE_CHANGES))} may change "
            "(resume_config(checkpoint) gives the saved settings); start a new run for the rest"
        )


def resume_config(checkpoint: str | os.PathLike, **changes: Any) -> TrainConfig:
    """The configuration saved in a ``last.safetensors``, with ``changes`` applied.

    Only the fields in ``RESUMABLE_CHANGES`` may change; anything else raises FERConfigError.
    """
    meta = read_checkpoint_meta(checkpoint)
    if "config" not in meta or "training_state" not in meta:
        raise _no_training_state(checkpoint)
    saved = TrainConfig.from_dict(meta["config"])
    unknown = set(changes) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise FERConfigError(f"unknown TrainConfig field(s): {', '.join(sorted(unknown))}")
    wanted = dataclasses.replace(saved, **changes)
    _refuse_unsafe_changes(checkpoint, saved, wanted)
    return wanted


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


def lr_factor(step: int, total_steps: int, warmup_steps: int, scheduler: str) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then cosine / linear decay or constant."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if scheduler == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if scheduler == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD; biases and norm layers get no weight decay."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def model_card(config: TrainConfig, classes: tuple[str, ...]) -> ModelCard:
    """The description inference needs, derived from the training config."""
    spec = arch_spec(config.arch)
    return ModelCard(config.arch, tuple(classes), config.image_size, spec.mean, spec.std)


def epoch_seed(config: TrainConfig, epoch: int) -> int:
    """The seed of one epoch's shuffling and augmentation: a pure function of (seed, epoch), so a
    resumed run replays exactly. The stride is a prime above any epoch count: no two (seed, epoch)
    pairs share a stream."""
    return config.seed * EPOCH_SEED_STRIDE + epoch


EPOCH_SEED_STRIDE = 100_003


@dataclass
class RunState:
    """Where a run stands between epochs: what ``last.safetensors`` stores to resume exactly."""

    next_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0

    def to_meta(self) -> dict[str, Any]:
        return {
            "epoch": self.next_epoch - 1,
            "history": self.history,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
        }


def restore_run(
    resume: str | os.PathLike, config: TrainConfig, classes: tuple[str, ...]
) -> tuple[Checkpoint, RunState]:
    """Load ``last.safetensors`` and check it continues this very run (same classes, same settings
    apart from ``RESUMABLE_CHANGES``)."""
    checkpoint = load_checkpoint(resume)
    state = checkpoint.meta.get("training_state")
    if state is None or checkpoint.optimizer_state is None:
        raise _no_training_state(resume)
    if checkpoint.classes != classes or checkpoint.arch != config.arch:
        raise FERCheckpointError(
            f"{resume}: was trained as {checkpoint.arch} on {', '.join(checkpoint.classes)}; "
            f"this run is {config.arch} on {', '.join(classes)}"
        )
    _refuse_unsafe_changes(resume, TrainConfig.from_dict(checkpoint.meta.get("config", {})), config)
    run = RunState(state["epoch"] + 1, state["history"], state["best_value"], state["best_epoch"], state["bad_epochs"])
    return checkpoint, run


def build_train_loader(
    train_set: FaceSet, config: TrainConfig, world: World, device: torch.device
) -> tuple[DataLoader, Callable[[int], None]]:
    """The augmented training DataLoader, and a function that reseeds its order for an epoch.

    One process shuffles with a seeded generator; several processes each read their share of
    a ``DistributedSampler`` permutation. ``class_weighting="sampler"`` draws classes equally often.
    """
    spec = arch_spec(config.arch)
    dataset = TorchFaceDataset(train_set, train_transform(config.image_size, config.augment, spec.mean, spec.std))
    generator = torch.Generator()
    if world.distributed:
        if config.class_weighting == "sampler":
            raise FERConfigError("class_weighting='sampler' works in one process; use 'loss' with several")
        sampler = DistributedSampler(
            dataset, num_replicas=world.size, rank=world.rank, shuffle=True, seed=config.seed, drop_last=True
        )
    elif config.class_weighting == "sampler":
        sampler = weighted_sampler(train_set, generator)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        drop_last=len(dataset) > config.batch_size * world.size,
        pin_memory=device.type == "cuda",  # page-locked batches copy to the GPU asynchronously
        persistent_workers=False,  # new workers each epoch draw their seeds from the reseeded generator
    )

    def reseed(epoch: int) -> None:
        seed = epoch_seed(config, epoch)
        torch.manual_seed(seed * world.size + world.rank)  # augmentation differs between processes
        generator.manual_seed(seed)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)

    return loader, reseed


@dataclass
class EpochStats:
    """What one pass over the training data measured (summed over processes)."""

    loss: float  # summed over images
    correct: int
    images: int
    lr: float  # at the last step


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    schedule: Callable[[int], float],
    first_step: int,
    device: torch.device,
    precision: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = True,
    progress: bool = False,
    desc: str = "epoch",
    after_step: Callable[[], None] | None = None,
    mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> EpochStats:
    """One pass over ``loader``: forward, loss, backward, optimizer step, learning-rate schedule.

    ``schedule(step)`` gives the learning rate of global step ``step`` (``first_step`` is this
    epoch's first); ``after_step()`` runs after every optimizer step (the weight average's update);
    ``mix(images, targets)`` mixes each batch (:func:`fer_utils.train.transforms.batch_mixing`), and the
    training accuracy then counts a prediction right when it names the larger share of the mix.
    Raises FERTrainingError when the loss stops being a finite number.
    """
    model.train()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no sync per step
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen, lr = 0, schedule(first_step)
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch")
    for i, (images, targets) in enumerate(bar):
        lr = schedule(first_step + i)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if mix is not None:
            images, targets = mix(images, targets)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(images)
            loss = criterion(logits.float(), targets)
        if not torch.isfinite(loss):  # one sync per step: cheap next to the backward pass, and it
            raise FERTrainingError(  # stops a diverged run before a broken step is taken
                f"loss became {loss.item()} at step {i + 1} of this epoch (lr {lr:.2e}); "
                "lower the learning rate (lr) or check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:  # fp16: scale the loss so small gradients do not underflow
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if after_step is not None:
            after_step()
        n = len(targets)
        total_loss += loss.detach() * n
        hard = targets if targets.ndim == 1 else targets.argmax(dim=1)
        correct += (logits.argmax(dim=1) == hard).sum()
        seen += n
        if progress and i % 10 == 0:
            bar.set_postfix(loss=f"{total_loss.item() / seen:.3f}", lr=f"{lr:.1e}")
    return EpochStats(total_loss.item(), int(correct.item()), seen, lr)


def validate(model: nn.Module, faces: FaceSet, config: TrainConfig) -> dict[str, float]:
    """Validation loss, accuracy and macro-F1 (no TTA), scored by ``fer_utils.train.evaluation``."""
    spec = arch_spec(config.arch)
    report = evaluate_model(model, faces, config.image_size, spec.mean, spec.std, batch_size=config.eval_batch_size)
    probabilities = report.probabilities
    if not np.isfinite(probabilities).all():
        return {"val_loss": float("nan"), "val_accuracy": float("nan"), "val_macro_f1": float("nan")}
    picked = probabilities[np.arange(len(faces)), faces.labels]
    return {
        "val_loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
        "val_accuracy": report.accuracy,
        "val_macro_f1": report.macro_f1,
    }


def _refuse_non_finite(
    model: nn.Module, metrics: dict[str, float], epoch: int, config: TrainConfig, last: Path
) -> None:
    """Stop before a diverged model is saved or selected: NaN/inf weights or validation outputs."""
    broken = [name for name, p in model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if broken or not math.isfinite(metrics["val_loss"]):
        what = f"{len(broken)} weight tensors became NaN/inf" if broken else "validation outputs became NaN/inf"
        saved = f" The last good epoch is saved in {last}." if last.exists() else " Nothing was saved."
        raise FERTrainingError(
            f"training diverged at epoch {epoch + 1}: {what}; lower the learning rate (lr, now {config.lr}) "
            f"or check momentum/weight_decay.{saved}"
        )


def _is_better(value: float, best: float | None, monitor: str) -> bool:
    if best is None:
        return True
    return value < best if monitor == "val_loss" else value > best


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
    card: ModelCard
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
    if train_set.classes != val_set.classes:
        raise FERConfigError("train and validation sets have different class lists")
    if len(train_set) == 0 or len(val_set) == 0:
        raise FERConfigError(f"need faces to train and validate on, got {len(train_set)} and {len(val_set)}")
    if config.teacher:
        train_set = distillation_targets(train_set, load_teacher(config.teacher, train_set), config.distill_weight)
    world = launched_world()
    if world.distributed and config.freeze_backbone_epochs:
        raise FERConfigError("freeze_backbone_epochs needs a single process: DDP cannot unfreeze layers mid-run")
    device = resolve_device(config.device)
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)  # one GPU per process
        torch.cuda.set_device(device)
    join(world, device)
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    classes = train_set.classes
    card = model_card(config, classes)
    card.extra["data"] = data_info or {}
    torch.manual_seed(config.seed)  # the classifier's initial weights
    checkpoint, state = restore_run(resume, config, classes) if resume is not None else (None, RunState())

    # The model: built on the CPU (weights load there), then moved; ``net`` is what trains.
    model = build_model(
        config.arch,
        len(classes),
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
        config, world, device, model, net, optimizer, criterion, loader, reseed, precision, scaler, card, state,
        paths, progress and world.is_main, ema, batch_mixing(len(classes), config.mixup_alpha, config.cutmix_alpha),
    )  # fmt: skip


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
    metrics = from_main(run.world, _validate_run(run, val_set) if run.world.is_main else None)
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
    metrics = validate(run.selected, val_set, run.config)
    if run.ema is not None:
        metrics["raw_val_accuracy"] = validate(run.model, val_set, run.config)["val_accuracy"]
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
        saved = {"config": config.to_dict(), "metrics": row}
        if improved:
            save_checkpoint(run.paths["best"], run.selected, run.card, **saved | {"metrics": {**row, "split": "val"}})
        save_checkpoint(
            run.paths["last"],
            run.model,
            run.card,
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
        from_main(run.world, None)  # all processes wait until rank 0 has written its files
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
        leave(run.world)

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
