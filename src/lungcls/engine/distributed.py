"""Many processes, one run: set up torch.distributed from torchrun's environment, and the few collectives
``fit`` needs. With one process (no ``WORLD_SIZE``) every helper is a no-op."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import LungclsError
from .device import resolve_device


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: rank, number of processes, local GPU index."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        """Only the main process writes checkpoints, logs and progress bars."""
        return self.rank == 0


def rank_batch_size(batch_size: int, ranks: Ranks) -> int:
    """Each process's share of a training batch: the global batch (and so the steps per epoch and the
    learning-rate schedule) stays ``batch_size`` whatever the number of processes.

    Raises:
        LungclsError: ``batch_size`` is not a multiple of the number of processes, or leaves each fewer than 2.
    """
    if batch_size % ranks.world:
        raise LungclsError(
            f"--batch-size {batch_size} is not a multiple of the {ranks.world} processes; "
            f"use {batch_size - batch_size % ranks.world or ranks.world}"
        )
    if ranks.world > 1 and batch_size // ranks.world < 2:
        raise LungclsError(
            f"--batch-size {batch_size} over {ranks.world} processes leaves batches of 1, which BatchNorm cannot "
            f"train on; use at least {2 * ranks.world}"
        )
    return batch_size // ranks.world


def setup(device: str = "auto") -> tuple[Ranks, torch.device]:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU) and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(), resolve_device(device)
    cuda = torch.cuda.is_available() and device != "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    return Ranks(dist.get_rank(), dist.get_world_size(), local), torch.device("cuda", local) if cuda else torch.device(
        "cpu"
    )


def barrier(ranks: Ranks) -> None:
    """Wait for every process (no-op alone)."""
    if ranks.world > 1:
        dist.barrier()


def mean(value: float, ranks: Ranks, device: torch.device) -> float:
    """The mean of ``value`` over the processes."""
    if ranks.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / ranks.world


def same_weights(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> bool:
    """True when every process holds the same parameters (a checksum compared across ranks)."""
    if ranks.world == 1:
        return True
    total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1).to(device)
    gathered = [torch.zeros_like(total) for _ in range(ranks.world)]
    dist.all_gather(gathered, total)
    return all(torch.allclose(g, gathered[0], rtol=0, atol=1e-9) for g in gathered)


def wrap(model: torch.nn.Module, ranks: Ranks, device: torch.device, find_unused: bool = False) -> Any:
    """DistributedDataParallel around ``model`` when there are several processes.

    ``find_unused``: the model holds parameters its forward never uses (e.g. a U-Net encoder cut
    to fewer stages than it was built with), which DDP must be told about.
    """
    if ranks.world == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def main_first(ranks: Ranks, fn):
    """Run ``fn`` on rank 0 first (e.g. to write a cache), then on the other ranks (which find it made)."""
    if ranks.world == 1:
        return fn()
    if ranks.main:
        result = fn()
        barrier(ranks)
        return result
    barrier(ranks)
    return fn()
