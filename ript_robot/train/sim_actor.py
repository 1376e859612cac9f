"""A simulated actor: claims scheduled rollouts, runs them through the shared runtime, commits them.

It is what a robot does, with simulators (the built-in task's, or LIBERO's) in place of the arm: take
the latest published policy (verified, and only between episodes), claim slots of the
schedule for that version, run them in lock step through `run_episodes`, and hand every
step to the store's background writer, which commits each episode with the simulator's
label. Many actors can share a store; the schedule's claims keep them from running the
same slot. It stops when the trainer marks the schedule done (or after `max_episodes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from tqdm.auto import tqdm

from ript_robot.config import ConfigError, QuickstartConfig
from ript_robot.data.schedule import Schedule
from ript_robot.data.store import EpisodeStore
from ript_robot.policies.published import PolicyFollower
from ript_robot.runtime.loop import EpisodeSink
from ript_robot.runtime.timing import Backoff
from ript_robot.types import ActionChunk, EpisodeMeta, Label, Observation, StepRecord
from sim_bridge.rollouts import SimRollouts, builtin_rollouts, scripted_operator


@dataclass
class ActorReport:
    """What an actor did before it stopped."""

    episodes: int = 0
    policy_versions: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class Unlabeled:
    """A sink that commits episodes unlabeled, as a real arm does, and keeps the simulator's label
    aside in `outcomes` (episode id -> Label): what a scripted operator looks at."""

    def __init__(self, sink: EpisodeSink, outcomes: dict[str, Label]):
        self.sink, self.outcomes = sink, outcomes

    def begin(self, meta: EpisodeMeta) -> None:
        self.sink.begin(meta)

    def add_chunk(
        self, episode_id: str, chunk: ActionChunk, observation: Observation, planned_step: int | None = None
    ) -> None:
        self.sink.add_chunk(episode_id, chunk, observation, planned_step)

    def add_step(self, episode_id: str, record: StepRecord) -> None:
        self.sink.add_step(episode_id, record)

    def end(self, meta: EpisodeMeta, final: Observation | None = None) -> None:
        if meta.label is not None:
            self.outcomes[meta.episode_id] = meta.label
        self.sink.end(replace(meta, label=None), final)


def run_actor(
    cfg: QuickstartConfig,
    store: EpisodeStore,
    max_episodes: int | None = None,
    progress: bool = True,
    sim: SimRollouts | None = None,
    outcomes: dict[str, Label] | None = None,
) -> ActorReport:
    """Run claimed rollouts until the schedule is done or `max_episodes` have been committed.

    sim: the simulators to run them on (default: the built-in task); the actor closes them.
    outcomes: when given, rollouts are committed unlabeled, as on an arm, and the simulator's
    labels go here by episode id instead (for a scripted operator to label from)."""
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    schedule = Schedule(store.backend)
    follower = PolicyFollower(store.backend)
    sim = sim or builtin_rollouts(cfg, cfg.actor.max_envs, cfg.actor.robot_id)
    claim = min(cfg.actor.max_envs, sim.max_envs)
    s = cfg.store
    writer = store.writer(
        chunk_frames=s.chunk_frames, flush_frames=s.flush_frames, compressor=s.compressor, clevel=s.clevel
    )
    sink: EpisodeSink = writer if outcomes is None else Unlabeled(writer, outcomes)
    report = ActorReport()
    bar = tqdm(desc=f"actor {cfg.actor.robot_id}", unit="ep", disable=not progress)
    operator = scripted_operator(cfg)  # the built-in task's, when configured (its rescues are stored as such)
    backoff = Backoff(cfg.actor.poll_s, min(0.05, cfg.actor.poll_s))  # looks at the schedule while it waits
    try:
        while max_episodes is None or report.episodes < max_episodes:
            if schedule.finished():
                break
            if follower.update():  # between batches, so never mid-episode
                report.policy_versions.append(follower.version)
                if cfg.runtime.execute_steps > follower.policy.chunk_size:
                    raise ConfigError(
                        f"runtime.execute_steps ({cfg.runtime.execute_steps}) exceeds the chunk size "
                        f"({follower.policy.chunk_size}) of published policy v{follower.version}"
                    )
            if follower.policy is None:  # none published yet, or none that loads (the follower logged why)
                bar.set_postfix_str((follower.problem or "waiting for the trainer's first policy")[:200])
                backoff.wait()
                continue
            writer.flush()  # claim only what can be delivered now: no backlog of claimed, unwritten slots
            n = claim if max_episodes is None else min(claim, max_episodes - report.episodes)
            slots = schedule.claim(follower.version, cfg.actor.robot_id, n)
            if not slots:
                bar.set_postfix_str(f"v{follower.version}: waiting for work")
                backoff.wait()
                continue
            backoff.changed()
            contexts, ids = [slot.context for slot in slots], [slot.slot_id for slot in slots]
            episodes = sim(follower.policy, contexts, sink=sink, slot_ids=ids, intervener=operator)
            report.episodes += len(episodes)
            bar.update(len(episodes))
            problem = f"; {follower.problem}" if follower.problem else ""  # a damaged publication: v kept
            bar.set_postfix_str(f"v{follower.version}, {writer.backlog} queued for the store{problem}"[:200])
    finally:
        writer.close()
        sim.close()
        bar.close()
    report.failures = writer.failures
    return report
