"""Data-parallel training under torchrun: one process per device, each on its part of every batch.

    torchrun --nproc_per_node 2 -m engine train --spec run.json

torchrun starts the processes and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `from_env`
reads them and `init` joins the process group (NCCL on CUDA, gloo on CPU). Every process builds the same run:
rank 0 resolves the spec and draws its seed, and the others receive that spec (`Dist.from_main`). Each process
trains on its part of each batch (`DataLoaders.shard`) and DistributedDataParallel averages the gradients, so a
step sees the spec's whole batch (`data.bs` is the global batch size) as one process would: the same number of
steps, the same schedule. Validation is split the same way and its sums are added up over the processes.
Rank 0 alone writes the run folder and the runs database.

BatchNorm is plain DDP's: each process normalises with its own part of the batch (no SyncBatchNorm), and the
running statistics are rank 0's (broadcast before every forward pass and before validation), which is the model
that is saved.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from engine.errors import UserError

T = TypeVar("T")
TORCHRUN_ENV = ("RANK", "WORLD_SIZE")  # set by torchrun (and torch.distributed.run) for every process it starts


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that records the run and prints."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This process's own GPU when training on CUDA (one GPU per process, by local rank), else `device`."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" else device

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model in DistributedDataParallel, for the parameters that train now (wrap again after freeze/unfreeze)."""
        device = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def any(self, flag: bool) -> bool:
        """Whether any process says yes (every process must ask at the same point of its loop)."""
        t = torch.tensor([1.0 if flag else 0.0], device=_comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def sum(self, values: Sequence[float]) -> list[float]:
        """`values` added up over every process."""
        t = torch.tensor(list(values), dtype=torch.float64, device=_comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def same(self, values: Sequence[float]) -> bool:
        """Whether every process has the same `values`."""
        t = torch.tensor([*values, *(-v for v in values)], dtype=torch.float64, device=_comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        highest, lowest = t[:len(values)], -t[len(values):]
        return bool(torch.equal(highest, lowest))

    def mean(self, value: float) -> float:
        """The mean of `value` over every process."""
        return self.sum([value])[0] / self.world_size

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every process rank 0's buffers (BatchNorm's running statistics)."""
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def local_first(self, do: Callable[[], T]) -> T:
        """`do()` on each machine's first process, then on its others (so a download or a write happens once a machine)."""
        if self.local_rank == 0:
            out = do()
        dist.barrier()
        if self.local_rank != 0:
            out = do()
        return out

    def from_main(self, make: Callable[[], T]) -> T:
        """What `make()` returns on rank 0, on every process; if it raises there, every process raises."""
        payload: list = [None]
        if self.is_main:
            try:
                payload = [("ok", make())]
            except Exception as e:
                dist.broadcast_object_list([("error", str(e))], src=0)
                raise
        dist.broadcast_object_list(payload, src=0)
        status, value = payload[0]
        if status == "error":
            raise UserError(f"Rank 0 could not prepare the run: {value}")
        return value


def from_env(environ: Mapping[str, str] = os.environ) -> Dist | None:
    """This process's rank when torchrun started it (RANK and WORLD_SIZE set), else None."""
    if not all(name in environ for name in TORCHRUN_ENV):
        return None
    return Dist(rank=int(environ["RANK"]), world_size=int(environ["WORLD_SIZE"]),
                local_rank=int(environ.get("LOCAL_RANK", 0)))


def init(d: Dist, device: torch.device) -> None:
    """Join torchrun's process group: NCCL when training on CUDA (each process on its own GPU), gloo on the CPU."""
    if device.type not in ("cuda", "cpu"):
        raise UserError(f"torchrun trains on CUDA GPUs or on the CPU, not on {device.type}: add --device cpu.")
    if device.type == "cuda":
        if d.local_rank >= torch.cuda.device_count():
            raise UserError(f"Process {d.rank} wants GPU {d.local_rank} but this machine has "
                            f"{torch.cuda.device_count()}: give --nproc_per_node at most the number of GPUs.")
        torch.cuda.set_device(d.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def close() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    # NCCL only moves GPU tensors
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
