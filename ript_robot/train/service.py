"""The off-board trainer service: RIPT updates from groups that actors commit to the store.

The trainer and the actors meet only in the store. For the current policy version v the
trainer schedules `groups_per_iteration` contexts, K rollouts each; whenever K labeled
rollouts of a context have been committed (by any robot or sim worker, from policy
versions v - max_staleness .. v) it judges the group. A group whose rewards are all equal
is dropped and, within the dynamic-sampling budget, another context is scheduled in its
place. With enough informative groups it runs the PPO update of `ript_robot.rl.ppo` and
publishes v + 1, whose manifest lists the episodes it trained on and those it rejected.

Everything the trainer needs to resume is in the store: the latest policy and its
optimizer state, the schedule, and the manifests' episode lists (so a restarted trainer
uses no episode twice and loses none: an update killed half-way published nothing).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ript_robot.config import RIPTConfig, TrainerConfig
from ript_robot.data.backend import StoreError
from ript_robot.data.checkpoints import (
    latest_version,
    load_published,
    publish_policy,
    published_versions,
    read_manifest,
    read_optimizer,
    save_optimizer,
)
from ript_robot.data.schedule import Schedule
from ript_robot.data.store import EpisodeStore, StoredGroup
from ript_robot.policies.base import Policy
from ript_robot.rl.distributed import (
    barrier,
    broadcast,
    data_parallel,
    full_optimizer_state,
    full_state,
    load_full_optimizer_state,
    shard,
)
from ript_robot.rl.ppo import build_batch, ppo_update
from ript_robot.rl.sampling import ContextPool, Group, SamplingStats
from ript_robot.train.logging import MetricsLogger
from ript_robot.types import Context

REJECTED_PREFIX = "trainer/rejected"


class StoreTrainer:
    """Leave-one-out PPO with dynamic rollout sampling, fed by the episode store."""

    def __init__(
        self,
        store: EpisodeStore,
        contexts: Sequence[Context],
        ript: RIPTConfig,
        config: TrainerConfig,
        seed: int = 0,
        logger: MetricsLogger | None = None,
    ):
        self.store = store
        self.backend = store.backend
        self.schedule = Schedule(store.backend)
        self.pool = ContextPool(contexts, seed)
        self.ript = ript
        self.config = config
        self.logger = logger
        self.generator = torch.Generator().manual_seed(seed)
        self.policy: Policy | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.consumed: set[str] = set()
        self.abort_reason: str | None = None  # set from another thread (e.g. its actor died): stop waiting

    def start(self, initial: Policy | None = None) -> bool:
        """Resume from the store's latest policy, or publish `initial` as version 0.

        Returns True when it resumed. The optimizer state of the latest version is restored
        when the store has it. Under torchrun every rank calls it (rank 0 with `initial`): they
        wait for each other here, and sharded ranks restore their slices together.
        """
        latest = latest_version(self.backend)
        policy = None
        if latest is None and data_parallel()[0] == 0:
            if initial is None:
                raise StoreError(f"{self.store.uri} has no published policy: give an initial checkpoint")
            initial.version = 0
            publish_policy(self.backend, initial, {"iteration": 0, "trained_on": [], "rejected": []})
            policy = initial
        barrier()  # data-parallel ranks start together, from what rank 0 published (a no-op alone)
        if policy is None:
            latest = latest_version(self.backend)
            policy = load_published(self.backend, latest)
        self.policy = policy
        if self.config.fsdp:
            if data_parallel()[1] < 2:
                raise StoreError("trainer.fsdp shards across torchrun ranks: start with torchrun --nproc-per-node 2+")
            shard(self.policy)  # before the optimizer: it holds (and steps) only this rank's slices
        self.optimizer = torch.optim.Adam(self.policy.rl_parameters(), lr=self.ript.lr)
        saved = read_optimizer(self.backend, latest) if latest is not None else None
        if saved is not None:
            load_full_optimizer_state(self.policy, self.optimizer, saved)
        self.consumed = self._consumed()
        return latest is not None

    def _consumed(self) -> set[str]:
        """Every episode an update (or a fruitless round) already used, from the store alone."""
        ids: set[str] = set()
        for version in published_versions(self.backend):
            manifest = read_manifest(self.backend, version)
            ids.update(manifest.get("trained_on", []), manifest.get("rejected", []))
        for obj in self.backend.list(REJECTED_PREFIX + "/"):
            ids.update(self.backend.get_json(obj["path"]) or [])
        return ids

    def run(self, iterations: int, progress: bool = True) -> list[dict[str, Any]]:
        """Train until the published version reaches `iterations`, then tell actors to stop."""
        assert self.policy is not None, "call start() first"
        if self.schedule.finished():
            self.schedule.reopen()
        history = []
        with tqdm(
            total=iterations, initial=min(self.policy.version, iterations), desc="RIPT", disable=not progress
        ) as bar:
            while self.policy.version < iterations:
                metrics = self.iteration(bar)
                history.append(metrics)
                if self.logger is not None:
                    self.logger.log("ript", self.policy.version, metrics)
                if metrics["updated"]:
                    bar.update(1)
        self.schedule.finish(self.policy.version)
        broadcast(None)  # data-parallel followers stop
        return history

    def follow(self) -> int:
        """On a data-parallel rank other than 0: update alongside rank 0, on the groups of episodes it
        names, until it finishes (see `rl.distributed`); returns the number of updates.

        Call `start()` after rank 0's (it may publish version 0): every rank then holds the same policy,
        optimizer state and generator seed, so they stay in step without ever sending weights."""
        assert self.policy is not None and self.optimizer is not None, "call start() first"
        updates = 0
        while (named := broadcast()) is not None:
            self.store.refresh()
            groups = []
            for ids in named:
                episodes = self.store.read_episodes(ids)
                if len(episodes) != len(ids):
                    raise StoreError(f"rank {data_parallel()[0]} could not read every episode rank 0 trained on")
                groups.append(Group(episodes[0].meta.context, episodes))
            batch = build_batch(self.policy, groups)
            assert batch is not None, "rank 0 named groups without signal"
            ppo_update(self.policy, self.optimizer, batch, self.ript, self.generator)
            self.policy.version += 1
            self._gathered()  # when sharded, rank 0 gathers what it saves and publishes: take part
            updates += 1
        return updates

    def _gathered(self) -> tuple[dict[int, dict[str, Any]], dict[str, torch.Tensor]]:
        """The optimizer state and checkpoint tensors to save and publish, whole (collective when sharded:
        every rank calls it after each update, in this order)."""
        return full_optimizer_state(self.policy, self.optimizer), full_state(self.policy)

    def _schedule(self, contexts: list[Context]) -> None:
        if contexts:
            self.schedule.write_round(self.policy.version, contexts, self.ript.rollouts_per_context)

    def iteration(self, bar: tqdm | None = None) -> dict[str, Any]:
        """Collect informative groups for the current version, then update and publish."""
        assert self.policy is not None and self.optimizer is not None, "call start() first"
        cfg, v = self.ript, self.policy.version
        k, wanted = cfg.rollouts_per_context, cfg.groups_per_iteration
        min_version = v - self.config.max_staleness
        budget = wanted * cfg.max_sampling_rounds if cfg.dynamic_sampling else wanted
        pending = self._pending(v, min_version)
        if not pending:
            self._schedule(self.pool.take(wanted))
            pending = self._pending(v, min_version)
        scheduled = sum(pending.values())
        accepted: list[StoredGroup] = []
        rejected: list[StoredGroup] = []
        stats = SamplingStats()
        judged: set[str] = set()
        start = last_progress = time.monotonic()
        while True:
            if self.abort_reason:
                raise RuntimeError(f"training stopped while waiting for rollouts of v{v}: {self.abort_reason}")
            self.store.refresh()
            for group in self.store.complete_groups(k, min_version, v, exclude=self.consumed | judged):
                judged.update(r.episode_id for r in group.records)
                context_id = group.context.context_id
                if pending[context_id] > 0:
                    pending[context_id] -= 1
                (accepted if stats.judge(group.rewards, cfg.dynamic_sampling) else rejected).append(group)
                last_progress = time.monotonic()
            waiting = sum(pending.values())
            if len(accepted) >= wanted or (waiting == 0 and (scheduled >= budget or not cfg.dynamic_sampling)):
                break
            replace = min(wanted - len(accepted) - waiting, budget - scheduled)
            if replace > 0:  # dynamic sampling: a context in place of each uniform group
                contexts = self.pool.take(replace)
                self._schedule(contexts)
                pending.update(c.context_id for c in contexts)
                scheduled += replace
            if time.monotonic() - last_progress > self.config.stall_timeout_s:
                tqdm.write(f"no rollouts for {self.config.stall_timeout_s:.0f} s: re-scheduling {waiting} contexts")
                self._schedule(self._contexts([c for c, n in pending.items() for _ in range(n)]))
                last_progress = time.monotonic()
            if bar is not None:
                bar.set_postfix_str(
                    f"v{v}: {len(accepted)}/{wanted} groups, {len(rejected)} uniform, {waiting} waiting"
                )
            time.sleep(self.config.poll_s)
        return self._update(v, accepted, rejected, stats, judged, time.monotonic() - start)

    def _pending(self, version: int, min_version: int) -> Counter[str]:
        """Contexts scheduled for `version` whose group has not been used yet."""
        scheduled = Counter(
            s.context.context_id for s in self.schedule.slots(version)[:: self.ript.rollouts_per_context]
        )
        used = Counter(
            r.meta.context.context_id
            for r in self.store.refresh().records()
            if r.episode_id in self.consumed and min_version <= r.meta.policy_version <= version
        )
        return Counter({c: n - used[c] // self.ript.rollouts_per_context for c, n in scheduled.items()}) + Counter()

    def _contexts(self, context_ids: list[str]) -> list[Context]:
        by_id = {c.context_id: c for c in self.pool.contexts}
        by_id.update({s.context.context_id: s.context for s in self.schedule.slots(self.policy.version)})
        return [by_id[c] for c in context_ids]

    def _update(
        self,
        version: int,
        accepted: list[StoredGroup],
        rejected: list[StoredGroup],
        stats: SamplingStats,
        judged: set[str],
        wait_s: float,
    ) -> dict[str, Any]:
        rewards = [r for g in accepted + rejected for r in g.rewards if r is not None]
        metrics: dict[str, Any] = {
            "policy_version": version,
            "rollout_success": float(np.mean(rewards)) if rewards else float("nan"),
            "episodes": len(judged),
            "groups_accepted": stats.accepted,
            "groups_rejected": stats.rejected,
            "rejected_all_success": stats.rejected_all_success,
            "rejected_all_failure": stats.rejected_all_failure,
            "wait_s": wait_s,
        }
        start = time.monotonic()
        groups = []
        for g in accepted:
            episodes = self.store.read_episodes(r.episode_id for r in g.records)
            if len(episodes) == len(g.records):  # a damaged episode drops its group (with a warning)
                groups.append(Group(g.context, episodes))
        batch = build_batch(self.policy, groups) if groups else None
        if batch is not None:  # data-parallel ranks update alongside on the same groups (a no-op alone)
            broadcast([[e.meta.episode_id for e in g.episodes] for g in groups])
        if batch is None:
            self.backend.put_json(f"{REJECTED_PREFIX}/v{version:06d}-{uuid.uuid4().hex[:8]}.json", sorted(judged))
            self.consumed |= judged
            metrics["updated"] = False
            return metrics
        metrics.update(ppo_update(self.policy, self.optimizer, batch, self.ript, self.generator))
        self.policy.version = version + 1
        metrics["updated"] = True
        metrics["update_s"] = time.monotonic() - start
        optimizer_state, state = self._gathered()
        save_optimizer(self.backend, self.policy.version, optimizer_state)
        trained_on = sorted(e.meta.episode_id for g in groups for e in g.episodes)
        publish_policy(
            self.backend,
            self.policy,
            {
                "iteration": self.policy.version,
                "trained_on": trained_on,
                "rejected": sorted(judged - set(trained_on)),
                "metrics": metrics,
            },
            state,
        )
        self.consumed |= judged
        return metrics
