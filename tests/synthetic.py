"""Synthetic episodes for the store's tests, shaped exactly as the runtime logs them."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import numpy as np

from ript_robot.types import ActionChunk, Context, Episode, EpisodeMeta, Label, Observation, StepRecord


def synthetic_episode(
    context_id: str = "scene/task/0",
    steps: int = 10,
    chunk_size: int = 4,
    success: bool | None = True,
    version: int = 0,
    seed: int = 0,
    image_size: int = 16,
) -> Episode:
    """An episode with random images, states and chunks, shaped as the runtime logs them."""
    rng = np.random.default_rng(seed)
    context = Context(context_id, "pick up the red block", seed, "scene")
    label = None if success is None else Label(success, "sim", labeler="test")
    meta = EpisodeMeta(uuid.uuid4().hex, context, version, "robot-test", time.time(), kind="rollout")
    records, chunks, chunk_obs = [], [], []
    for t in range(steps):
        obs = Observation(
            {"top": rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)},
            rng.normal(size=3).astype(np.float32),
            context.instruction,
            float(t),
        )
        if t % chunk_size == 0:
            chunks.append(
                ActionChunk(
                    rng.normal(size=(chunk_size, 3)).astype(np.float32),
                    rng.normal(size=chunk_size).astype(np.float32),
                    version,
                )
            )
            chunk_obs.append(obs)
        action = chunks[-1].actions[t % chunk_size]
        records.append(StepRecord(t, 1000.0 + t, obs, action, len(chunks) - 1, t in (1, 2), safety_limited=t == 2))
    meta.end_time, meta.num_steps, meta.end_reason, meta.label = time.time(), steps, "max steps", label
    return Episode(meta, records, chunks, chunk_obs)


def subprocess_env() -> dict[str, str]:
    """The environment for worker subprocesses: this one, with the repo and the test helpers importable."""
    tests = Path(__file__).resolve().parent
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests), str(tests / "data")])}
