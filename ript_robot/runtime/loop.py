"""The one control loop: observation -> policy -> safety filter -> env, shared by robot and sim.

`run_episodes` drives N envs in lock step (N = 1 on a robot, N > 1 for simulated rollouts)
so each tick makes one batched policy call for the envs that need a new chunk. A chunk is
executed open-loop for `execute_steps` steps, then the policy re-plans from the newest
observation. Every tick goes to an `EpisodeSink` (the in-memory buffer here; the episode
store's writer later), and each episode ends with the env's success label when the env
knows it (a simulator) or unlabeled when it does not (a real arm).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from ript_robot.config import RuntimeConfig
from ript_robot.envs.base import RobotEnv
from ript_robot.policies.base import Policy
from ript_robot.runtime.safety import SafetyFilter
from ript_robot.types import ActionChunk, Context, Episode, EpisodeMeta, Label, Observation, StepRecord


class EpisodeSink(Protocol):
    """Receives an episode as it happens. Implementations must not block the control tick."""

    def begin(self, meta: EpisodeMeta) -> None: ...

    def add_chunk(self, episode_id: str, chunk: ActionChunk, observation: Observation) -> None: ...

    def add_step(self, episode_id: str, record: StepRecord) -> None: ...

    def end(self, meta: EpisodeMeta) -> None: ...


class EpisodeBuffer:
    """An `EpisodeSink` that keeps finished episodes in memory (the in-process trainer's store)."""

    def __init__(self) -> None:
        self._open: dict[str, Episode] = {}
        self.episodes: list[Episode] = []

    def begin(self, meta: EpisodeMeta) -> None:
        self._open[meta.episode_id] = Episode(meta=meta, steps=[], chunks=[], chunk_observations=[])

    def add_chunk(self, episode_id: str, chunk: ActionChunk, observation: Observation) -> None:
        episode = self._open[episode_id]
        episode.chunks.append(chunk)
        episode.chunk_observations.append(observation)

    def add_step(self, episode_id: str, record: StepRecord) -> None:
        self._open[episode_id].steps.append(record)

    def end(self, meta: EpisodeMeta) -> None:
        self.episodes.append(self._open.pop(meta.episode_id))


def run_episodes(
    envs: Sequence[RobotEnv],
    contexts: Sequence[Context],
    policy: Policy,
    config: RuntimeConfig,
    sink: EpisodeSink | None = None,
    deterministic: bool = False,
    robot_id: str = "sim",
    safety: SafetyFilter | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[Episode]:
    """Run one episode per (env, context) pair in lock step and return them, in order.

    sink: also receives every chunk and step (the returned episodes come from an internal
    buffer either way). on_step(n_active): called once per tick, e.g. for a progress bar.
    """
    if len(envs) != len(contexts):
        raise ValueError(f"{len(envs)} envs but {len(contexts)} contexts: give one context per env")
    if not envs:
        return []
    if config.execute_steps > policy.chunk_size:
        raise ValueError(
            f"runtime.execute_steps ({config.execute_steps}) exceeds the policy's chunk size ({policy.chunk_size})"
        )
    spec = envs[0].spec
    safety = safety or SafetyFilter(config.safety, spec.action_dim)
    buffer = EpisodeBuffer()
    sinks: list[EpisodeSink] = [buffer] if sink is None else [buffer, sink]

    metas, observations = [], []
    for env, context in zip(envs, contexts, strict=True):
        observations.append(env.reset(context))
        meta = EpisodeMeta(
            episode_id=uuid.uuid4().hex,
            context=context,
            policy_version=policy.version,
            robot_id=robot_id,
            start_time=time.time(),
        )
        metas.append(meta)
        for s in sinks:
            s.begin(meta)

    n = len(envs)
    active = list(range(n))
    chunks: list[ActionChunk | None] = [None] * n
    chunk_counts = [0] * n
    step = 0
    while active:
        if step % config.execute_steps == 0:  # envs run in lock step, so all re-plan together
            planned = policy.act([observations[i] for i in active], deterministic=deterministic)
            for i, chunk in zip(active, planned, strict=True):
                chunks[i] = chunk
                chunk_counts[i] += 1
                for s in sinks:
                    s.add_chunk(metas[i].episode_id, chunk, observations[i])
        still_active = []
        for i in active:
            chunk = chunks[i]
            assert chunk is not None
            command, clipped, fault = safety(chunk.actions[step % config.execute_steps])
            record = StepRecord(
                step=step,
                timestamp=time.time(),
                observation=observations[i],
                action=command,
                chunk_index=chunk_counts[i] - 1,
                safety_clipped=clipped,
            )
            for s in sinks:
                s.add_step(metas[i].episode_id, record)
            if fault:
                _finish(metas[i], envs[i], step + 1, "fault: non-finite action, arm held", None, sinks)
                continue
            result = envs[i].step(command)
            observations[i] = result.observation
            if result.done:
                _finish(metas[i], envs[i], step + 1, result.reason, result.success, sinks)
            elif step + 1 >= spec.max_steps:
                _finish(metas[i], envs[i], step + 1, "max steps", result.success, sinks)
            else:
                still_active.append(i)
        if on_step is not None:
            on_step(len(active))
        active = still_active
        step += 1
    by_id = {e.meta.episode_id: e for e in buffer.episodes}
    return [by_id[m.episode_id] for m in metas]


def _finish(
    meta: EpisodeMeta,
    env: RobotEnv,
    num_steps: int,
    reason: str,
    success: bool | None,
    sinks: Sequence[EpisodeSink],
) -> None:
    meta.end_time = time.time()
    meta.num_steps = num_steps
    meta.end_reason = reason
    if success is not None:
        meta.label = Label(success=success, source="sim", labeler=type(env).__name__)
    for s in sinks:
        s.end(meta)


def success_rate(episodes: Sequence[Episode]) -> float:
    """Share of labeled episodes that succeeded (NaN when none is labeled)."""
    rewards = [e.reward for e in episodes if e.reward is not None]
    return float(np.mean(rewards)) if rewards else float("nan")
