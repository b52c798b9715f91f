"""The parts of a training loop, each usable alone (notebook 04 writes an epoch by hand, then
reads these): the learning-rate schedule, the optimizer, the shuffled loader of an epoch,
``train_one_epoch`` (forward, loss, backward, step) and ``validate``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from fer_utils.core.config import (
    TrainConfig,
)
from fer_utils.core.errors import FERConfigError, FERTrainingError
from fer_utils.data.faceset import FaceSet, TorchFaceDataset, weighted_sampler
from fer_utils.model.devices import autocast
from fer_utils.model.factory import arch_spec
from fer_utils.runtime.description import ModelDescription
from fer_utils.train.distributed import World
from fer_utils.train.evaluation import evaluate_model
from fer_utils.train.transforms import train_transform


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


def epoch_seed(config: TrainConfig, epoch: int) -> int:
    """The seed of one epoch's shuffling and augmentation: a pure function of (seed, epoch), so a
    resumed run replays exactly. The stride is a prime above any epoch count: no two (seed, epoch)
    pairs share a stream."""
    return config.seed * EPOCH_SEED_STRIDE + epoch


EPOCH_SEED_STRIDE = 100_003


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
        _step(loss, optimizer, scaler)
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


def _step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """Backward and one optimizer step; in fp16 the loss is scaled so small gradients do not underflow."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def validate(model: nn.Module, faces: FaceSet, description: ModelDescription, batch_size: int) -> dict[str, float]:
    """Validation loss, accuracy and macro-F1 (no TTA), scored by ``fer_utils.train.evaluation``."""
    report = evaluate_model(model, faces, description.with_tta("none"), batch_size=batch_size)
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
