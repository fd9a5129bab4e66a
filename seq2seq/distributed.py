"""Distributed data parallel: process group set-up and the few collectives training needs.

``torchrun --nproc-per-node N -m seq2seq train ...`` (or ``seq2seq train --nproc N``, which runs
torchrun for you) starts N processes with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set. Each joins
one process group: nccl on GPUs (one GPU per process), gloo on CPUs. Rank r trains on batches
r, r + N, r + 2N, ... of the common epoch order; gradients are averaged by
``DistributedDataParallel``. Only rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from seq2seq.errors import Seq2SeqError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group when started by torchrun; returns the world and this process's
    device (``cuda:LOCAL_RANK`` on GPUs)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise Seq2SeqError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, local), device


def all_sum(value: float, world: World, device: torch.device) -> float:
    if not world.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def broadcast_flag(flag: bool, world: World, device: torch.device) -> bool:
    """Rank 0's decision (e.g. stop training) for every rank."""
    if not world.distributed:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
