"""torchrun support: one process per device, found from the environment torchrun sets
(WORLD_SIZE, RANK, LOCAL_RANK). gloo on the CPU, nccl on CUDA. Only rank 0 writes files."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import InputError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def current() -> World:
    """The process's place in the torchrun job (a world of one outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def is_main_process() -> bool:
    return current().main


@contextmanager
def process_group(device: torch.device):
    """Join the torchrun job where WORLD_SIZE > 1 and no process group exists yet (and leave it
    on exit); otherwise nothing. nccl for CUDA devices, gloo for the CPU."""
    world = current()
    start = world.size > 1 and not dist.is_initialized()
    if start:
        if not dist.is_available():
            raise InputError(f"WORLD_SIZE={world.size}: this torch build has no torch.distributed: run one process")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield current()
    finally:
        if start:
            dist.destroy_process_group()


def pick_device(name: str) -> torch.device:
    """config.device "auto": this process's GPU under torchrun, a GPU where there is one, else the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", current().local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def all_mean(values: torch.Tensor, world: World) -> torch.Tensor:
    """The mean over processes (each process's value is a mean over an equal share of the batch)."""
    if world.size > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= world.size
    return values


def from_main(obj, world: World):
    """Rank 0's object on every process (pickled over the process group)."""
    if world.size == 1:
        return obj
    box = [obj if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()
