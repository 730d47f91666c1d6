"""Plain PyTorch DDP: who this process is, which device it drives, and the few collectives training needs.

``torchrun --nproc_per_node N -m masksam train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; without them the run is
a single process. NCCL drives GPUs, gloo the CPU (so the distributed path is tested in CI with two processes).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from masksam.devices import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job.

    Attributes:
        rank: Global rank (0 writes every file).
        world_size: Number of processes.
        local_rank: Rank on this machine (selects the GPU).
        device: The device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(requested_device: str) -> DistributedContext:
    """Joins the process group when launched by torchrun (env RANK/WORLD_SIZE), else a single-process context."""
    device = resolve_device(requested_device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistributedContext(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown_distributed(context: DistributedContext) -> None:
    if context.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def average_over_ranks(values: dict[str, float], context: DistributedContext) -> dict[str, float]:
    """Mean of scalar logs over ranks (identity for one process)."""
    if not context.is_distributed or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return dict(zip(keys, (tensor / context.world_size).tolist(), strict=True))


def sum_over_ranks(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Element-wise sum over ranks (in place; identity for one process)."""
    if context.is_distributed:
        dist.all_reduce(tensor)
    return tensor


def broadcast_object(value, context: DistributedContext):
    """Rank 0's ``value`` on every rank (e.g. the schedule planned from rank 0's timing)."""
    if not context.is_distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
