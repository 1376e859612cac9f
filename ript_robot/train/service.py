"""The off-board trainer service: RIPT updates from groups that actors commit to the store.

The trainer and the actors meet only in the store. For the current policy version v the
trainer schedules `groups_per_iteration` groups, K slots of one context each, and learns
only from what fills them (`train.ledger`): sampled rollouts that name a slot it scheduled,
once each carries a settled label (an operator's only after its undo window). Groups of
versions v - max_staleness .. v that still wait for labels count as outstanding work, so
late labels cost no extra rollouts. A group whose rewards are all equal is dropped and,
within the dynamic-sampling budget, another context is scheduled in its place. With enough
informative groups it runs the PPO update of `ript_robot.rl.ppo` and publishes v + 1, whose
manifest lists the episodes it trained on and those it rejected, with the labels it used
(`data.usage`: a correction after the fact is reported, never silently dropped).

Everything the trainer needs to resume is in the store: the latest policy and its
optimizer state, the schedule, and the manifests' episode lists (so a restarted trainer
uses no episode twice and loses none: an update killed half-way published nothing).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ript_robot.config import RIPTConfig, TrainerConfig
from ript_robot.data.backend import StoreError
from ript_robot.data.checkpoints import latest_version, published_versions, read_manifest
from ript_robot.data.schedule import Schedule
from ript_robot.data.store import EpisodeCorrupt, EpisodeStore
from ript_robot.data.usage import TrainingUse
from ript_robot.policies.base import Policy
from ript_robot.policies.published import load_published, publish_policy, read_optimizer, save_optimizer
from ript_robot.rl.distributed import (
    barrier,
    broadcast,
    data_parallel,
    full_optimizer_state,
    full_state,
    load_full_optimizer_state,
    shard,
)
from ript_robot.rl.ppo import batch_for, ppo_update
from ript_robot.rl.sampling import (
    Group,
    GroupSampler,
    Replay,
    SamplingStats,
    context_pool,
    groups_left,
)
from ript_robot.runtime.timing import Backoff, WallClock
from ript_robot.train.ledger import GroupState, Ledger, LedgerGroup
from ript_robot.train.logging import MetricsLogger
from ript_robot.types import Context, Episode

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
        clock: WallClock | None = None,
    ):
        """clock: wall time to settle labels and time stalls by, and to sleep on (default: the real one)."""
        self.store = store
        self.backend = store.backend
        self.schedule = Schedule(store.backend)
        self.pool = context_pool(contexts, ript, seed)
        self.ript = ript
        self.config = config
        self.logger = logger
        self.clock = clock or WallClock()
        self.generator = torch.Generator().manual_seed(seed)
        self.policy: Policy | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.consumed: set[str] = set()
        self.damaged: dict[str, str] = {}  # episodes that failed their integrity check -> why (never trained on)
        self._read: dict[str, Episode] = {}  # members of the groups accepted this iteration, read and verified
        self.use = TrainingUse(store.backend)
        self.reported: set[str] = set()  # corrections already printed
        self.replay = Replay(ript.reuse_updates)  # accepted groups that join the next updates too (in memory)
        self.abort_reason: str | None = None  # set from another thread (e.g. its actor died): stop waiting
        self.stop_reason: str | None = None  # why `run` stopped before the last version, when it did

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
        if self.config.device:
            self.policy.place(self.config.device, "trainer.device")
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
        history: list[dict[str, Any]] = []
        self.stop_reason = None
        with tqdm(
            total=iterations, initial=min(self.policy.version, iterations), desc="RIPT", disable=not progress
        ) as bar:
            while self.policy.version < iterations:
                if groups_left(self.ript, len(self.consumed)) == 0:
                    tqdm.write(
                        f"ript.episode_budget ({self.ript.episode_budget}) spent: stopping at v{self.policy.version}"
                    )
                    break
                metrics = self.iteration(bar)
                history.append(metrics)
                if self.logger is not None:
                    self.logger.log("ript", self.policy.version, metrics)
                if metrics["updated"]:
                    bar.update(1)
                    continue
                self.stop_reason = self._fruitless(history)
                if self.stop_reason:
                    tqdm.write(self.stop_reason)
                    break
        self.schedule.finish(self.policy.version)
        broadcast(None)  # data-parallel followers stop
        return history

    def _fruitless(self, history: list[dict[str, Any]]) -> str | None:
        """Why to stop, when the last `max_fruitless_iterations` iterations all spent their sampling budget
        without a group to learn from (rollouts keep costing robot time and labels, and nothing changes)."""
        n = self.config.max_fruitless_iterations
        last = history[-n:]
        if not n or len(last) < n or any(m["updated"] for m in last):
            return None
        failed, succeeded = (sum(m[key] for m in last) for key in ("rejected_all_failure", "rejected_all_success"))
        return (
            f"stopping at v{self.policy.version}: {n} sampling budgets in a row gave no group with mixed outcomes "
            f"({sum(m['episodes'] for m in last)} episodes; {failed} groups all failed, {succeeded} all succeeded). "
            "The policy solves none of the contexts, or all of them: check the policy, the labels and the contexts "
            "(trainer.max_fruitless_iterations sets how many budgets to try, 0 for no limit)"
        )

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
            batch = batch_for(self.policy, groups, self.ript)
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

    def ledger(self, judged: set[str] = frozenset()) -> Ledger:
        """The scheduled groups of the staleness window as the store holds them now."""
        return Ledger(
            self.schedule,
            self.store.refresh().records(),
            self.policy.version,
            self.config.max_staleness,
            self.consumed | judged,
            self.ript.rollouts_per_context,
            self.clock.time(),
            set(self.damaged),
        )

    def _intact(self, group: LedgerGroup, sampler: GroupSampler) -> bool:
        """Read and verify the members of a group the update would use; a damaged one is logged, becomes a
        hole of its group (scheduled again) and is never trained on. A group `sampler` drops is dropped unread."""
        if not sampler.keeps(group.rewards, group.corrected):
            return True
        for record in group.members:
            try:
                self._read[record.episode_id] = self.store.read_episode(record.episode_id)
            except EpisodeCorrupt as exc:
                self.damaged[record.episode_id] = str(exc)
                tqdm.write(f"not training on a damaged episode, its slot is scheduled again: {exc}")
                return False
        return True

    def iteration(self, bar: tqdm | None = None) -> dict[str, Any]:
        """Collect informative groups for the current version, then update and publish.

        Groups still waiting from earlier versions of the staleness window count as outstanding
        work, so only the difference is scheduled; a rollout the operator discarded is replaced
        at once, and after `stall_timeout_s` without any new rollout or label, so are slots whose
        actor claimed them and went away."""
        assert self.policy is not None and self.optimizer is not None, "call start() first"
        cfg, v = self.ript, self.policy.version
        sampler = GroupSampler.for_config(self.pool, cfg, len(self.consumed))  # as the in-process learner decides
        accepted: list[LedgerGroup] = []
        rejected: list[LedgerGroup] = []
        judged: set[str] = set()
        start = last_progress = self.clock.time()
        progress: tuple[int, int] | None = None
        backoff = Backoff(self.config.poll_s, min(0.05, self.config.poll_s), self.clock.sleep)
        while True:
            if self.abort_reason:
                raise RuntimeError(f"training stopped while waiting for rollouts of v{v}: {self.abort_reason}")
            ledger = self.ledger(judged)
            for group in ledger.in_state(GroupState.READY):
                if not self._intact(group, sampler):
                    continue
                group.judged_at = ledger.now
                judged.update(r.episode_id for r in group.members)
                kept = sampler.judge(group.context.context_id, group.rewards, group.corrected)
                (accepted if kept else rejected).append(group)
            waiting = ledger.in_state(GroupState.WAITING)
            if sampler.done(len(waiting)):
                break
            self._schedule(sampler.schedule(len(waiting)))  # first work, or a context in place of a uniform group
            if holes := ledger.holes():
                self.schedule.write_replacements(v, holes)
            now = self.clock.time()
            if ledger.progress() != progress:
                progress, last_progress = ledger.progress(), now
                backoff.changed()
            elif now - last_progress > self.config.stall_timeout_s:
                claimed = set().union(*(self.schedule.claimed(u) for u in {g.version for g in waiting}))
                if lost := ledger.lost(claimed | self.schedule.claimed(v)):
                    tqdm.write(f"no new rollout or label for {self.config.stall_timeout_s:.0f} s: "
                               f"re-scheduling {len(lost)} claimed rollouts never committed")  # fmt: skip
                    self.schedule.write_replacements(v, lost)
                last_progress = now
            if bar is not None:
                bar.set_postfix_str(
                    f"v{v}: {len(accepted)}/{sampler.wanted} groups, {len(rejected)} uniform, {len(waiting)} waiting, "
                    f"{ledger.backlog()} to label"
                )
            backoff.wait()
        return self._update(v, accepted, rejected, sampler.stats, judged, self.clock.time() - start, ledger)

    def corrections(self) -> list[str]:
        """Episodes whose label changed after an update used them: 'episode <id>: used as ... by vN, now ...'."""
        self.use.refresh()
        records = self.store.index.episodes
        found = (
            (episode_id, self.use.correction(records[episode_id]))
            for episode_id in self.use.uses
            if episode_id in records
        )
        return [f"episode {episode_id}: {text}" for episode_id, text in found if text]

    def _update(
        self,
        version: int,
        accepted: list[LedgerGroup],
        rejected: list[LedgerGroup],
        stats: SamplingStats,
        judged: set[str],
        wait_s: float,
        ledger: Ledger,
    ) -> dict[str, Any]:
        rewards = [r for g in accepted + rejected for r in g.rewards]
        corrections = self.corrections()
        for line in sorted(set(corrections) - self.reported):
            tqdm.write(f"label corrected after training: {line}")
        self.reported.update(corrections)
        metrics: dict[str, Any] = {
            "policy_version": version,
            "rollout_success": float(np.mean(rewards)) if rewards else float("nan"),
            "episodes": len(judged),
            "groups_accepted": stats.accepted,
            "groups_rejected": stats.rejected,
            "rejected_all_success": stats.rejected_all_success,
            "rejected_all_failure": stats.rejected_all_failure,
            "groups_corrected": stats.corrected,
            "wait_s": wait_s,
            "label_backlog": ledger.backlog(),  # rollouts of waiting groups with no settled label yet
            "mixed_version_groups": sum(g.mixed for g in accepted + rejected),  # the replacement fallback
            "unfit_rollouts": len(ledger.unfit),  # named a slot they could not fill (e.g. deterministic)
            "corrections_after_training": len(corrections),
            "damaged_episodes": len(self.damaged),  # failed their integrity check so far: replaced, never trained on
        }
        start = time.monotonic()
        groups = []
        for g in accepted:
            episodes = [self._read.pop(r.episode_id) for r in g.members]  # read and verified when judged
            for episode, label in zip(episodes, g.labels, strict=True):
                episode.meta.label = label  # learn from the labels the group was judged on, not a newer, unsettled one
            groups.append(Group(g.context, episodes))
        self._read.clear()
        metrics["replayed_groups"] = len(self.replay)
        groups = self.replay.batch(groups)
        batch = batch_for(self.policy, groups, self.ript) if groups else None
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
        trained_on = sorted({e.meta.episode_id for g in groups for e in g.episodes})
        publish_policy(
            self.backend,
            self.policy,
            {
                "iteration": self.policy.version,
                "trained_on": trained_on,
                "rejected": sorted(judged - set(trained_on)),
                "labels_used": {  # what each episode was judged with, and when (wall time of the trainer's clock)
                    **{  # replayed groups (reuse_updates > 1; after the accepted): the labels they were judged with
                        e.meta.episode_id: {"success": e.meta.label.success, "time": e.meta.label.time}
                        for g in groups[len(accepted) :]
                        for e in g.episodes
                        if e.meta.label is not None
                    },
                    **{
                        r.episode_id: {"success": label.success, "time": label.time, "judged_at": g.judged_at}
                        for g in accepted + rejected
                        for r, label in zip(g.members, g.labels, strict=True)
                    },
                },
                "metrics": metrics,
                "corrections": corrections,
            },
            state,
        )
        self.consumed |= judged
        return metrics
