"""Data parallelism for the trainer with torch.distributed: joining the process group, and what ranks share.

`torchrun --nproc-per-node N -m ript_robot.cli train ...` starts N trainer processes and
describes the group in the environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
Rank 0 is the trainer of `train.service`: it schedules, waits for the actors' groups and
publishes; the other ranks follow it, each update on the episodes rank 0 names, and the
PPO update (`rl.ppo.ppo_update`) sums their gradients, so N ranks make one process's
update N times faster per step. Without torchrun everything here is a no-op.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def init_from_env(backend: str = "") -> tuple[int, int]:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPUs); (rank, world size), (0, 1) alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return data_parallel()


def data_parallel() -> tuple[int, int]:
    """(rank, world size) of the current process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce(values: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
    """Reduce `values` in place across ranks (a no-op alone) and return them."""
    if data_parallel()[1] > 1:
        dist.all_reduce(values, op=op)
    return values


def broadcast(message: Any = None) -> Any:
    """Rank 0's `message` (any picklable object), on every rank; alone, `message` itself."""
    if data_parallel()[1] == 1:
        return message
    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (a no-op alone)."""
    if data_parallel()[1] > 1:
        dist.barrier()
