"""Data parallelism for the trainer with torch.distributed: joining the process group, and what ranks share.

`torchrun --nproc-per-node N -m ript_robot.cli train ...` starts N trainer processes and
describes the group in the environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
Rank 0 is the trainer of `train.service`: it schedules, waits for the actors' groups and
publishes; the other ranks follow it, each update on the episodes rank 0 names, and the
PPO update (`rl.ppo.ppo_update`) sums their gradients, so N ranks make one process's
update N times faster per step. Without torchrun everything here is a no-op.

With `trainer.fsdp` the ranks also shard the policy (`shard`, FSDP2's fully_shard): each holds
a slice of every weight, gradient and Adam moment, so a model no single device holds trains
across several. FSDP reduce-scatters the gradients, and what is published or saved is gathered
whole first (`full_state`, `full_optimizer_state`: collective, every rank calls them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

# Imported here, before any process group exists: imported after init_process_group, FSDP's and
# distributed checkpoint's modules keep the group alive past destroy_process_group, so its gloo
# threads outlive it and die with the interpreter, sometimes aborting a rank that had finished.
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import distribute_tensor


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


@contextmanager
def membership() -> Iterator[None]:
    """Leave the process group joined before the block (a no-op without one) when the block ends: after a
    barrier when it ended normally, so no rank tears its connections down under a peer's last collective;
    at once after an error, since the other ranks may never reach a barrier."""
    joined = dist.is_available() and dist.is_initialized()
    try:
        yield
    except BaseException:
        if joined:
            dist.destroy_process_group()
        raise
    if joined:
        dist.barrier()
        dist.destroy_process_group()


FORWARD_METHODS = ("log_prob", "sample", "bc_loss")  # policy entry points that gather the sharded weights


def shard(policy: nn.Module) -> nn.Module:
    """Shard the policy across the process group with FSDP2: each block of its ModuleLists (the transformer
    layers of a VLM) is its own unit, the rest is the root's. Returns the policy, sharded in place."""
    blocks = [block for container in policy.modules() if isinstance(container, nn.ModuleList) for block in container]
    for block in reversed(blocks):  # inner units before the units that hold them
        fully_shard(block)
    fully_shard(policy)
    for method in FORWARD_METHODS:
        register_fsdp_forward_method(policy, method)
    return policy


def is_sharded(module: nn.Module) -> bool:
    """Whether `shard` (FSDP2) sharded this module."""
    return isinstance(module, FSDPModule)


def _options() -> Any:
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state(policy: nn.Module) -> dict[str, torch.Tensor]:
    """The policy's checkpoint tensors, whole, on rank 0 ({} on the others); collective when sharded."""
    state = policy.checkpoint_state()
    if not is_sharded(policy):
        return state
    whole = get_model_state_dict(policy, options=_options())
    return {key: whole[key] for key in state} if whole else {}


def _names(policy: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The parameter name of each position in the optimizer's (single) parameter group."""
    by_id = {id(p): name for name, p in policy.named_parameters()}
    return [by_id[id(p)] for p in optimizer.param_groups[0]["params"]]


def full_optimizer_state(policy: nn.Module, optimizer: torch.optim.Optimizer) -> dict[int, dict[str, Any]]:
    """The optimizer's per-parameter state by position, whole, on rank 0 ({} on the others); collective
    when sharded."""
    if not is_sharded(policy):
        return optimizer.state_dict()["state"]
    whole = get_optimizer_state_dict(policy, optimizer, options=_options())
    index = {name: i for i, name in enumerate(_names(policy, optimizer))}
    return {index[name]: state for name, state in whole.get("state", {}).items()}


def load_full_optimizer_state(
    policy: nn.Module, optimizer: torch.optim.Optimizer, state: dict[int, dict[str, Any]]
) -> None:
    """Give the optimizer per-parameter state by position (as `full_optimizer_state` returns it), whole, on
    every rank."""
    if not is_sharded(policy):
        optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
        return
    for i, parameter in enumerate(optimizer.param_groups[0]["params"]):
        if i in state:  # each rank cuts, from its own whole copy, the slice matching its slice of the weight
            optimizer.state[parameter] = {
                key: distribute_tensor(value, parameter.device_mesh, parameter.placements, src_data_rank=None)
                if value.dim()
                else value
                for key, value in sorted(state[i].items())
            }
