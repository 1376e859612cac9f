"""One RIPT iteration: collect informative groups of K rollouts, then a PPO update.

The learner is the method side of the loop and knows nothing about where rollouts come
from: in-process simulators, actor processes writing to the store, or a robot. It is
given a `rollout(contexts) -> episodes` function and a context pool, and returns the
diagnostics of each iteration (success rate, accepted and rejected groups, approx_kl,
clip fraction, loss).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ript_robot.config import RIPTConfig
from ript_robot.policies.base import Policy
from ript_robot.rl.ppo import batch_for, ppo_update
from ript_robot.rl.sampling import ContextPool, GroupSampler, Replay, collect_groups, groups_left
from ript_robot.runtime.loop import success_rate
from ript_robot.types import Context, Episode


class RIPTLearner:
    """Leave-one-out PPO with dynamic rollout sampling on a pool of contexts.

    With `reuse_updates` > 1 each accepted group also joins the next updates (`rl.sampling.Replay`)."""

    def __init__(self, policy: Policy, pool: ContextPool, config: RIPTConfig, seed: int = 0):
        self.policy = policy
        self.pool = pool
        self.config = config
        self.optimizer = torch.optim.Adam(policy.rl_parameters(), lr=config.lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.iteration = 0
        self.replay = Replay(config.reuse_updates)
        self.episodes = 0  # rollouts sampled so far, dropped groups included: what `episode_budget` counts

    @property
    def spent(self) -> bool:
        """The run's `episode_budget` cannot pay for another group."""
        return groups_left(self.config, self.episodes) == 0

    def step(self, rollout: Callable[[list[Context]], list[Episode]]) -> dict[str, Any]:
        """Run one iteration; the policy's version goes up by one when it was updated."""
        cfg = self.config
        sampler = GroupSampler.for_config(self.pool, cfg, self.episodes)
        groups, stats = collect_groups(sampler, rollout, cfg.rollouts_per_context)
        self.episodes += len(stats.episodes)
        self.iteration += 1
        metrics: dict[str, Any] = {
            "iteration": self.iteration,
            "rollout_success": success_rate(stats.episodes),
            "episodes": len(stats.episodes),
            "sampling_rounds": stats.rounds,
            "groups_accepted": stats.accepted,
            "groups_rejected": stats.rejected,
            "rejected_all_success": stats.rejected_all_success,
            "rejected_all_failure": stats.rejected_all_failure,
            "groups_corrected": stats.corrected,
        }
        metrics["replayed_groups"] = len(self.replay)
        batch = batch_for(self.policy, self.replay.batch(groups), cfg)
        if batch is None:
            metrics["updated"] = False
            return metrics
        metrics.update(ppo_update(self.policy, self.optimizer, batch, cfg, self.generator))
        metrics["updated"] = True
        self.policy.version += 1
        metrics["policy_version"] = self.policy.version
        return metrics
