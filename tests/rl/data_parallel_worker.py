"""One rank of the data-parallel PPO test: a gloo process group on this CPU, the shared batch, one update
(the policy whole on every rank, or sharded across them with FSDP)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from ript_robot.config import RIPTConfig
from ript_robot.policies import load_policy
from ript_robot.policies.base import Policy
from ript_robot.rl.distributed import full_state, membership, shard
from ript_robot.rl.ppo import RolloutBatch, ppo_update


def update(policy: Policy, batch: RolloutBatch, config: RIPTConfig) -> dict[str, float]:
    """The update every rank and the single-process reference run: same optimizer, same shuffling seed.

    Plain SGD, so parameters move by exactly the summed gradient: Adam would turn the float noise of
    a gradient that is ~0 by symmetry (a bias before the spatial softmax) into full-size steps."""
    optimizer = torch.optim.SGD(policy.rl_parameters(), lr=0.05)
    return ppo_update(policy, optimizer, batch, config, torch.Generator().manual_seed(0))


def rank_main(rank: int, world: int, init_file: str, inputs: str, out: str, fsdp: bool = False) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    with membership():
        state, stats = update_on_this_rank(inputs, fsdp)
    if rank == 0:  # after leaving the group: its threads must be gone, or they die with the interpreter
        torch.save({"state": state, "stats": stats, "threads_left": native_threads()}, Path(out))


def update_on_this_rank(inputs: str, fsdp: bool) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The shared batch's update on this rank's copy or shard; the policy's state gathered whole, the stats."""
    checkpoint, batch, config = torch.load(inputs, weights_only=False)
    policy = load_policy(checkpoint)
    if fsdp:
        shard(policy)
    stats = update(policy, batch, config)
    return full_state(policy), stats


def native_threads() -> list[str]:
    """The names of this process's threads (Linux), Python's and C++'s alike."""
    return sorted(task.joinpath("comm").read_text().strip() for task in Path("/proc/self/task").iterdir())
