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
) -> list[Episode]:
    """One expert episode per context; with successful_only, failures are left out."""
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
            result = env.step(action)
            obs = result.observation
            if result.done:
                break
        meta.end_time, meta.num_steps, meta.end_reason = time.time(), len(steps), result.reason
        if result.success is not None:
            meta.label = Label(success=result.success, source="sim", labeler="expert")
        if result.success or not successful_only:
            episodes.append(Episode(meta, steps, chunks=[], chunk_observations=[]))
    return episodes
