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


def shard(indices: torch.Tensor) -> torch.Tensor:
    """This rank's disjoint slice of an epoch's (already shuffled, identical on every rank) index order.

    Pads by wrapping so every rank runs the same number of steps (DDP all-reduces must line up).
    """
    rank, size = world()
    if size == 1:
        return indices
    total = -(-len(indices) // size) * size
    padded = torch.cat([indices, indices[: total - len(indices)]])
    return padded[rank::size]
