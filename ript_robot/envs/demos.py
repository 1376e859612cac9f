"""Recording demonstrations from a scripted expert, as episodes the SFT code reads.

The expert is any function of the env (simulators expose privileged state to it); its
commands go through the env exactly like a policy's, and each episode is labeled by the
env, so failed demonstrations can be dropped before training.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from ript_robot.envs.base import RobotEnv
from ript_robot.types import Context, Episode, EpisodeMeta, Label, StepRecord

E = TypeVar("E", bound=RobotEnv)


def record_demonstrations(
    env: E,
    contexts: Sequence[Context],
    expert: Callable[[E], np.ndarray],
    successful_only: bool = True,
    frame_every: int = 1,
) -> list[Episode]:
    """One expert episode per context; with successful_only, failures are left out.

    frame_every: render the cameras every N-th step only (>= 1); the expert needs no pictures,
    and SFT learns from the steps that have them (a slow simulator renders N times less)."""
    if frame_every < 1:
        raise ValueError(f"frame_every must be >= 1, got {frame_every}")
    episodes = []
    for context in contexts:
        obs = env.reset(context)
        meta = EpisodeMeta(
            uuid.uuid4().hex, context, -1, robot_id="expert", start_time=time.time(), kind="demonstration"
        )
        steps: list[StepRecord] = []
        for t in range(env.spec.max_steps):
            action = np.asarray(expert(env), dtype=np.float32)
            steps.append(StepRecord(step=t, timestamp=time.time(), observation=obs, action=action, chunk_index=0))
            result = env.step(action, render=(t + 1) % frame_every == 0)
            obs = result.observation
            if result.done:
                break
        meta.end_time, meta.num_steps, meta.end_reason = time.time(), len(steps), result.reason
        if result.success is not None:
            meta.label = Label(success=result.success, source="sim", labeler="expert")
        if result.success or not successful_only:
            episodes.append(Episode(meta, steps, chunks=[], chunk_observations=[], final=obs if obs.images else None))
    return episodes
