"""Dynamic rollout sampling: gather groups of K rollouts whose rewards disagree.

A group whose K binary rewards are all equal has zero leave-one-out advantage everywhere and
only dilutes the update, so RIPT drops it and samples another context until the batch holds
`groups_wanted` informative groups. The reference implementation loops until the batch is
full, forever when every context is always solved (or never); here the groups an iteration
may schedule are bounded (`GroupSampler`, shared by the in-process learner and the store
trainer), and the iteration goes on with what it has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ript_robot.config import RIPTConfig
from ript_robot.rl.advantage import is_informative
from ript_robot.types import Context, Episode


@dataclass
class Group:
    """K rollouts of one context."""

    context: Context
    episodes: list[Episode]

    @property
    def rewards(self) -> list[float | None]:
        return [e.reward for e in self.episodes]

    @property
    def corrected(self) -> bool:
        """A person took over in one of its episodes."""
        return any(e.meta.interventions for e in self.episodes)


@dataclass
class SamplingStats:
    """What dynamic sampling did in one iteration."""

    rounds: int = 0
    accepted: int = 0
    rejected_all_success: int = 0
    rejected_all_failure: int = 0
    rejected_unlabeled: int = 0
    corrected: int = 0  # accepted groups a person took over in (kept for imitation, informative or not)
    episodes: list[Episode] = field(default_factory=list)  # every rollout, accepted or not

    @property
    def rejected(self) -> int:
        return self.rejected_all_success + self.rejected_all_failure + self.rejected_unlabeled

    def judge(self, rewards: Sequence[float | None], dynamic_sampling: bool, corrected: bool = False) -> bool:
        """Whether a group of K rewards is kept for the update; a dropped group is counted by why. A group a
        person `corrected` is kept whatever its rewards: its corrections are what the update imitates."""
        if keeps(rewards, dynamic_sampling, corrected):
            self.accepted += 1
            self.corrected += corrected
            return True
        labeled = [r for r in rewards if r is not None]
        if len(labeled) < 2:
            self.rejected_unlabeled += 1
        elif labeled[0] == 1.0:
            self.rejected_all_success += 1
        else:
            self.rejected_all_failure += 1
        return False


class ContextPool:
    """The contexts RIPT trains on, and which to roll out next.

    uniform: reshuffled passes, so each context is seen evenly. informative: each context's
    recent rewards (`observe`, the last `memory` of them) give a Beta posterior of its success
    rate; a Thompson draw p from it scores the chance 1 - p^K - (1-p)^K that a group of K comes
    back mixed, and contexts are drawn (without repeats) in proportion to that score, so contexts
    the policy has lately always or never solved are rolled out less often, but never never.
    """

    def __init__(
        self,
        contexts: Sequence[Context],
        seed: int = 0,
        selection: str = "uniform",
        rollouts_per_context: int = 8,
        memory: int = 16,
    ):
        if not contexts:
            raise ValueError("the context pool is empty: give at least one context to train on")
        ids = [c.context_id for c in contexts]
        if len(set(ids)) != len(ids):
            raise ValueError("context ids in the pool must be unique")
        if selection not in ("uniform", "informative"):
            raise ValueError(f"context selection must be 'uniform' or 'informative', got {selection!r}")
        self.contexts = list(contexts)
        self.selection, self.k, self.memory = selection, rollouts_per_context, memory
        self._rng = np.random.default_rng(seed)
        self._queue: list[Context] = []
        self._rewards: dict[str, list[float]] = {c.context_id: [] for c in contexts}

    def __len__(self) -> int:
        return len(self.contexts)

    def observe(self, context_id: str, rewards: Sequence[float | None]) -> None:
        """Remember a group's labeled rewards (unknown contexts are ignored)."""
        if context_id in self._rewards:
            seen = self._rewards[context_id] + [float(r) for r in rewards if r is not None]
            self._rewards[context_id] = seen[-self.memory :]

    def mixed_chance(self) -> np.ndarray:
        """Per context, a Thompson draw of the chance that its next group of K comes back mixed."""
        wins = np.array([sum(self._rewards[c.context_id]) for c in self.contexts])
        seen = np.array([len(self._rewards[c.context_id]) for c in self.contexts])
        p = self._rng.beta(1.0 + wins, 1.0 + seen - wins)
        return 1.0 - p**self.k - (1.0 - p) ** self.k

    def take(self, n: int) -> list[Context]:
        """The next n contexts; uniform: a context repeats only after the whole pool was visited."""
        if self.selection == "informative":
            out: list[Context] = []
            while len(out) < n:
                m = min(n - len(out), len(self.contexts))
                weights = self.mixed_chance() + 1e-6
                picked = self._rng.choice(len(self.contexts), size=m, replace=False, p=weights / weights.sum())
                out += [self.contexts[i] for i in picked]
            return out
        out = []
        while len(out) < n:
            if not self._queue:
                self._queue = [self.contexts[i] for i in self._rng.permutation(len(self.contexts))]
            out.append(self._queue.pop())
        return out


def keeps(rewards: Sequence[float | None], dynamic_sampling: bool, corrected: bool = False) -> bool:
    """Whether dynamic sampling keeps a group: always without it; with it, a group with mixed rewards, or one a
    person `corrected` (when the update imitates corrections)."""
    return not dynamic_sampling or is_informative(rewards) or corrected


def context_pool(contexts: Sequence[Context], config: RIPTConfig, seed: int = 0) -> ContextPool:
    """The pool a RIPT config asks for (its `context_selection` and K)."""
    return ContextPool(contexts, seed, config.context_selection, config.rollouts_per_context)


def groups_left(config: RIPTConfig, spent: int) -> int | None:
    """Groups of K the run's `episode_budget` still pays for after `spent` episodes (None: no budget)."""
    return None if not config.episode_budget else max(0, config.episode_budget - spent) // config.rollouts_per_context


class GroupSampler:
    """Dynamic sampling's decisions for one iteration: how many groups to schedule and which to keep.

    The one scheduling core of RIPT: the in-process learner (`collect_groups`: rounds run one after
    another, nothing waits between them) and the store trainer (groups come back in any order, those
    still waiting count as outstanding) both drive it, so a recipe behaves the same in the quickstart,
    in `ript train` with actors and on the arm. Each iteration wants `wanted` informative groups and may
    schedule at most `budget` groups (`wanted * max_rounds` with dynamic sampling, `wanted` without).
    """

    def __init__(
        self,
        pool: ContextPool,
        wanted: int,
        dynamic_sampling: bool = True,
        max_rounds: int = 4,
        max_groups: int | None = None,
        keep_corrected: bool = False,
    ):
        """max_groups: what is left of the run's episode budget, in groups (None: no limit); keep_corrected:
        groups with a person's corrections count as informative (when the update imitates them)."""
        if wanted < 1:
            raise ValueError(f"groups wanted per iteration must be >= 1, got {wanted}")
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
        self.pool, self.wanted, self.dynamic_sampling = pool, wanted, dynamic_sampling
        self.keep_corrected = keep_corrected
        self.budget = wanted * max_rounds if dynamic_sampling else wanted
        if max_groups is not None:
            self.budget = max(0, min(self.budget, max_groups))
        self.scheduled = 0  # groups this iteration scheduled
        self.stats = SamplingStats()

    @classmethod
    def for_config(cls, pool: ContextPool, config: RIPTConfig, spent: int = 0) -> GroupSampler:
        """The sampler a RIPT config asks for, `spent` episodes into the run's `episode_budget`."""
        return cls(
            pool,
            config.groups_per_iteration,
            config.dynamic_sampling,
            config.max_sampling_rounds,
            groups_left(config, spent),
            config.imitation_coef > 0,
        )

    def schedule(self, waiting: int = 0) -> list[Context]:
        """Contexts to roll out now, K each: what the accepted and `waiting` groups leave missing, within budget."""
        n = min(self.wanted - self.stats.accepted - waiting, self.budget - self.scheduled)
        if n <= 0:
            return []
        self.scheduled += n
        return self.pool.take(n)

    def keeps(self, rewards: Sequence[float | None], corrected: bool = False) -> bool:
        """Whether `judge` would keep a group with these rewards; corrected: a person took over in one of its
        episodes."""
        return keeps(rewards, self.dynamic_sampling, corrected and self.keep_corrected)

    def judge(self, context_id: str, rewards: Sequence[float | None], corrected: bool = False) -> bool:
        """Whether a finished group is kept for the update (`keeps`); the pool learns its rewards either way."""
        self.pool.observe(context_id, rewards)
        return self.stats.judge(rewards, self.dynamic_sampling, corrected and self.keep_corrected)

    def done(self, waiting: int = 0) -> bool:
        """Enough informative groups, or nothing left to wait for and the budget spent."""
        return self.stats.accepted >= self.wanted or (waiting == 0 and self.scheduled >= self.budget)


def collect_groups(
    sampler: GroupSampler,
    rollout: Callable[[list[Context]], list[Episode]],
    rollouts_per_context: int,
) -> tuple[list[Group], SamplingStats]:
    """Run `sampler`'s iteration in rounds, one after another: K rollouts of each context it schedules,
    until it is done (enough informative groups, or its budget spent even when every group is uniform).

    rollout(contexts) must return one episode per given context, in order. Without dynamic sampling
    every group is kept, as in plain GRPO/RLOO.
    """
    if rollouts_per_context < 2:
        raise ValueError(f"rollouts_per_context must be >= 2 for a leave-one-out baseline, got {rollouts_per_context}")
    stats = sampler.stats
    accepted: list[Group] = []
    while not sampler.done():
        contexts = sampler.schedule()
        stats.rounds += 1
        episodes = rollout([c for c in contexts for _ in range(rollouts_per_context)])
        if len(episodes) != len(contexts) * rollouts_per_context:
            raise RuntimeError(f"rollout returned {len(episodes)} episodes for {len(contexts) * rollouts_per_context}")
        stats.episodes.extend(episodes)
        for g, context in enumerate(contexts):
            group = Group(context, episodes[g * rollouts_per_context : (g + 1) * rollouts_per_context])
            if sampler.judge(context.context_id, group.rewards, group.corrected):
                accepted.append(group)
    return accepted, stats


class Replay:
    """Accepted groups that join more than one update (`reuse_updates`): their chunks keep the log-probs
    they were sampled with, so the PPO ratio stays exact and its clip bounds how far stale samples move
    the policy. Held in memory (a restarted trainer starts without replay)."""

    def __init__(self, reuse_updates: int = 1):
        if reuse_updates < 1:
            raise ValueError(f"reuse_updates must be >= 1, got {reuse_updates}")
        self.reuse_updates = reuse_updates
        self._held: list[tuple[Group, int]] = []  # groups of earlier updates, with updates left

    def __len__(self) -> int:
        return len(self._held)

    def batch(self, accepted: list[Group]) -> list[Group]:
        """The groups of this update: the newly accepted ones, then the replayed; advances the replay."""
        groups = accepted + [g for g, _ in self._held]
        self._held = [(g, n - 1) for g, n in self._held if n > 1]
        self._held += [(g, self.reuse_updates - 1) for g in accepted if self.reuse_updates > 1]
        return groups
