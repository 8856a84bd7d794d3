"""Process-group helpers so the same training code runs alone, in Train's local mode, or as a DDP rank."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when no process group is running."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.to(device)
    if world()[1] == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def shard(indices: torch.Tensor) -> tuple[torch.Tensor, float]:
    """This rank's disjoint slice of a global batch (same shuffled order on every rank) and its loss weight.

    DDP averages gradients over ranks; weighting each rank's mean loss by ``n_local * world / n_global`` makes that
    average exactly the gradient of the global batch mean, even when the batch does not split evenly, so N workers
    with global batch B make the same updates as one worker with batch B.
    """
    rank, size = world()
    if size == 1:
        return indices, 1.0
    local = indices[rank::size]
    return local, len(local) * size / len(indices)


def from_rank_zero(value: float, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank: a decision every rank must take alike (early stopping) never rests on
    floating-point results agreeing bit for bit across processes; a rank that stopped alone would hang the others."""
    if world()[1] == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())
