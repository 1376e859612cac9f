"""The chunk queue and the inference worker: the arm never waits on the policy, RIPT's bookkeeping stays exact.

The policy here blocks until the test lets it finish, so every ordering of "chunk ready" and
"control period" is played out deterministically, without timing."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
from conftest import observations, tiny_policy
from ript_ros.control import EpisodeRunner

from ript_robot.config import RuntimeConfig
from ript_robot.data import EpisodeStore
from ript_robot.rl.ppo import build_batch
from ript_robot.rl.sampling import Group
from ript_robot.runtime.inference import InferenceWorker
from ript_robot.runtime.loop import EpisodeBuffer, EpisodeController
from ript_robot.runtime.safety import SafetyFilter
from ript_robot.types import Context, Label


class GatedPolicy:
    """The tiny policy, but each act() waits for the test's go-ahead (a VLA that takes as long as we say)."""

    def __init__(self, fail: bool = False):
        self.inner = tiny_policy(seed=1, chunk_size=6)
        self.go = threading.Semaphore(0)
        self.calls = 0
        self.fail = fail

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def act(self, obs, deterministic=False):
        self.go.acquire()
        self.calls += 1
        if self.fail:
            raise RuntimeError("CUDA out of memory")
        return self.inner.act(obs, deterministic)


def runner(policy, sinks, execute_steps=4, lead=1) -> tuple[EpisodeRunner, InferenceWorker]:
    config = RuntimeConfig(execute_steps=execute_steps)
    controller = EpisodeController(policy, config, SafetyFilter(config.safety, 3), sinks)
    worker = InferenceWorker(policy, deterministic=False)
    return EpisodeRunner(controller, worker, lead), worker


def finish_planning(policy: GatedPolicy, worker: InferenceWorker) -> None:
    policy.go.release()
    assert worker.wait_idle(timeout=30)


def test_a_slow_policy_never_stops_the_commands_and_every_step_belongs_to_its_chunk(tmp_path):
    policy, buffer = GatedPolicy(), EpisodeBuffer()
    store = EpisodeStore(tmp_path / "store", create=True)
    writer = store.writer()
    run, worker = runner(policy, [buffer, writer])
    frames = observations(3) * 10
    run.begin(Context("c", "pick up the red block", 0, "lab_a"))
    assert run.period(frames[0]).hold  # the first chunk is being planned: the arm holds, nothing executes
    assert run.period(frames[1]).hold and run.steps == 0
    finish_planning(policy, worker)
    kinds, replanning = [], []
    for t in range(2, 20):
        period = run.period(frames[t])
        kinds.append("command" if period.command is not None else "hold")
        if period.command is not None:
            replanning.append(period.replanning)
        if t == 12:  # the second chunk finally comes, long after the first ran out
            finish_planning(policy, worker)
    # chunk 0 (6 actions) plays on past its switch point (4) while chunk 1 is planned, then the arm holds
    # chunk 1 was planned from step 3; chunk 2 from step 9 (3 into chunk 1) and is still planning at the end
    assert kinds == ["command"] * 6 + ["hold"] * 5 + ["command"] * 6 + ["hold"]
    assert run.late_periods == 6
    # latency is reported apart for the periods beside a re-plan: a chunk adopted, submitted or being planned
    assert replanning == [True, False, False, True, True, True] * 2
    meta = run.finish("max steps", None)
    writer.close()
    episode = buffer.episodes[0]
    assert [s.chunk_index for s in episode.steps][:7] == [0] * 6 + [1]
    assert episode.chunk_observations[0] is episode.steps[0].observation  # step 0 saw what chunk 0 was planned from
    assert episode.chunk_observations[1] is episode.steps[3].observation  # planned ahead, from step 3
    episode.meta.label = Label(success=True, source="sim")
    failed = copy.deepcopy(episode)
    failed.meta.label = Label(success=False, source="sim")
    batch = build_batch(policy.inner, [Group(episode.meta.context, [episode, failed])])
    credited = batch.mask.sum(1).tolist()[:2]
    # PPO sees what was executed, only that: chunk 0 ran 6 actions, less those the filter limited beyond the bounds
    limited = [s.safety_limited for s in episode.steps if s.chunk_index == 0]
    assert len(limited) == 6 and credited[0] == 6 - sum(limited)
    assert 1 <= credited[1] <= policy.chunk_size
    store.refresh()
    stored = store.read_episode(meta.episode_id)
    for read, kept in zip(stored.chunk_observations, episode.chunk_observations, strict=True):
        np.testing.assert_array_equal(read.state, kept.state)
        np.testing.assert_array_equal(read.images["top"], kept.images["top"])
    worker.close()


def test_a_stale_input_holds_without_executing_and_a_failing_policy_is_a_fault():
    policy = GatedPolicy(fail=True)
    run, worker = runner(policy, [])
    run.begin(Context("c", "pick", 0, "lab_a"))
    assert run.period(None).hold == "stale input" and policy.calls == 0
    run.period(observations(1)[0])
    finish_planning(policy, worker)
    assert run.period(observations(1)[0]).fault.startswith("fault: policy error: RuntimeError: CUDA out of memory")
    run.finish("fault", None)
    worker.close()


def test_the_worker_refuses_a_policy_swap_while_it_plans():
    policy = GatedPolicy()
    worker = InferenceWorker(policy, deterministic=True)
    worker.submit(observations(1)[0], 0)
    with pytest.raises(RuntimeError, match="still planning"):
        worker.submit(observations(1)[0], 1)
    with pytest.raises(RuntimeError, match="cannot swap the policy while it plans"):
        worker.set_policy(policy)
    finish_planning(policy, worker)
    assert worker.poll().chunk is not None
    worker.set_policy(policy)
    worker.close()
