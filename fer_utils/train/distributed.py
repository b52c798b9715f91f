"""Several processes training one model with PyTorch DistributedDataParallel.

Start them with PyTorch's own launcher, which sets RANK / WORLD_SIZE / LOCAL_RANK:

    torchrun --nproc_per_node=2 -m fer_utils.cli train --data ... --out runs/ddp

NCCL joins GPUs, Gloo joins CPU processes. Each process reads its share of every epoch
(``DistributedSampler``), DDP averages the gradients, and only rank 0 writes files and draws
progress bars. A plain ``python`` run is a world of one and none of this applies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, history and figures, and draws progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_world() -> World:
    """The world torchrun described in the environment (a world of one without it)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def join_processes(world: World, device: torch.device) -> None:
    """Join the process group (NCCL for CUDA, Gloo otherwise) unless already joined."""
    if world.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def leave_processes(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def sum_across(world: World, values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all processes (for loss and accuracy counts)."""
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)  # NCCL reduces GPU tensors only
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def broadcast_from_main(world: World, value: Any) -> Any:
    """Rank 0's ``value`` on every process (validation runs once, on rank 0)."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
