"""Simulators in worker processes: the same episodes as in-process, and a clear error when one dies."""

from __future__ import annotations

import os
from functools import partial

import numpy as np
import pytest
from conftest import IMAGE_SIZE

from ript_robot.config import RuntimeConfig
from ript_robot.envs.pick import PickEnv, make_contexts
from ript_robot.runtime.loop import run_episodes
from sim_bridge.workers import WorkerEnv, WorkerError

CONTEXTS = make_contexts("workcell", range(3))[:3]
RUNTIME = RuntimeConfig(execute_steps=4, frame_every=0)


class CrashingPickEnv(PickEnv):
    """The built-in task with a simulator that dies (as a segfault would) in the first step of the 2nd context."""

    def step(self, action, render=True):
        if self._context == CONTEXTS[1]:
            os._exit(3)
        return super().step(action, render)


def test_workers_run_the_same_episodes_as_in_process_simulators(policy) -> None:
    make = partial(PickEnv, image_size=IMAGE_SIZE, max_steps=30)
    workers = [WorkerEnv(make, f"pick-{i}") for i in range(len(CONTEXTS))]
    try:
        assert workers[0].spec == make().spec
        remote = run_episodes(workers, CONTEXTS, policy, RUNTIME, deterministic=True)
    finally:
        for w in workers:
            w.close()
    local = run_episodes([make() for _ in CONTEXTS], CONTEXTS, policy, RUNTIME, deterministic=True)
    for a, b in zip(remote, local, strict=True):
        assert a.meta.num_steps == b.meta.num_steps and a.reward == b.reward
        assert np.array_equal(np.stack([s.action for s in a.steps]), np.stack([s.action for s in b.steps]))
        assert [bool(s.observation.images) for s in a.steps] == [bool(s.observation.images) for s in b.steps]
    assert not any(w.alive for w in workers)


def test_a_dead_worker_raises_an_error_naming_its_context_and_closes(policy) -> None:
    make = partial(CrashingPickEnv, image_size=IMAGE_SIZE, max_steps=30)
    workers = [WorkerEnv(make, f"pick-{i}") for i in range(len(CONTEXTS))]
    try:
        with pytest.raises(WorkerError) as error:
            run_episodes(workers, CONTEXTS, policy, RUNTIME, deterministic=True)
    finally:
        for w in workers:
            w.close()
    message = str(error.value)
    assert "simulator worker pick-1" in message and CONTEXTS[1].context_id in message and "exit code 3" in message
    assert not any(w.alive for w in workers)


def test_a_simulator_that_cannot_start_says_why() -> None:
    with pytest.raises(WorkerError, match=r"failed while starting(.|\n)*image_size must be in"):
        WorkerEnv(partial(PickEnv, image_size=8), "broken")
