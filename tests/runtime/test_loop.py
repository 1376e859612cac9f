from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import IMAGE_SIZE, make_env, tiny_policy

from ript_robot.calibration.models import WorkspaceCalibration
from ript_robot.config import PolicyConfig, RuntimeConfig, SafetyConfig
from ript_robot.envs.pick import PickEnv, make_contexts
from ript_robot.policies.chunked import ChunkedPolicy
from ript_robot.runtime.loop import EpisodeBuffer, EpisodeController, run_episodes, success_rate
from ript_robot.runtime.safety import SafetyFilter
from ript_robot.types import Label


def contexts(n: int):
    return make_contexts("lab_a", range(n), tasks=("pick up the green block",))


class NaNPolicy(ChunkedPolicy):
    """A policy whose network blew up: every sampled action is NaN."""

    def sample(self, batch, deterministic=False):
        actions, log_prob = super().sample(batch, deterministic)
        return torch.full_like(actions, float("nan")), log_prob


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def begin(self, meta):
        self.events.append(("begin", meta.episode_id))

    def add_chunk(self, episode_id, chunk, observation, planned_step=None):
        self.events.append(("chunk", episode_id))

    def add_step(self, episode_id, record):
        self.events.append(("step", episode_id))

    def end(self, meta, final=None):
        self.events.append(("end", meta.episode_id))


def test_one_labeled_episode_per_context_in_order(policy):
    ctxs = contexts(5)
    policy.version = 2
    episodes = run_episodes([make_env(max_steps=12) for _ in ctxs], ctxs, policy, RuntimeConfig(execute_steps=3))
    assert [e.meta.context for e in episodes] == ctxs
    assert len({e.meta.episode_id for e in episodes}) == 5
    for e in episodes:
        assert e.meta.label is not None
        assert e.meta.label.source == "sim"
        assert e.meta.label.labeler == "PickEnv"
        assert e.meta.policy_version == 2
        assert e.meta.robot_id == "sim"
        assert e.meta.end_reason in {"grasped", "missed", "timeout"}
        assert 1 <= e.meta.num_steps == len(e.steps) <= 12
        assert e.meta.end_time is not None and e.meta.end_time >= e.meta.start_time
        assert e.reward == float(e.meta.label.success)
        assert all(c.policy_version == 2 for c in e.chunks)


def reluctant_policy(seed: int = 2) -> ChunkedPolicy:
    """A tiny policy whose grip mean is strongly negative, so it seldom ends an episode early."""
    policy = tiny_policy(seed=seed)
    with torch.no_grad():
        policy.mean_head.bias[2::3] = -1.0  # outputs are (H, A) flattened: every third is a grip
    return policy


@pytest.mark.parametrize("execute_steps", [1, 2, 3, 4])
def test_chunks_execute_open_loop_then_replan(execute_steps):
    policy = reluctant_policy()
    ctxs = contexts(6)
    episodes = run_episodes(
        [make_env(max_steps=11) for _ in ctxs], ctxs, policy, RuntimeConfig(execute_steps=execute_steps)
    )
    lengths = {e.meta.num_steps for e in episodes}
    assert max(lengths) > execute_steps, "some episode must outlive its first chunk for this test to mean anything"
    for e in episodes:
        n = e.meta.num_steps
        assert len(e.chunks) == math.ceil(n / execute_steps)
        assert len(e.chunk_observations) == len(e.chunks)
        assert [s.step for s in e.steps] == list(range(n))
        assert [s.chunk_index for s in e.steps] == [t // execute_steps for t in range(n)]
        for t, s in enumerate(e.steps):
            planned = e.chunks[s.chunk_index].actions[t % execute_steps]
            np.testing.assert_array_equal(s.action, np.clip(planned, -1.0, 1.0))
            assert s.safety_clipped == bool(np.any(np.abs(planned) > 1.0)) and not s.safety_limited  # bounds only
        for k, obs in enumerate(e.chunk_observations):  # each chunk is planned from the newest observation
            assert obs is e.steps[k * execute_steps].observation


def test_episode_that_reaches_its_step_limit_times_out(policy):
    class Hold(ChunkedPolicy):
        def sample(self, batch, deterministic=False):
            actions, log_prob = super().sample(batch, deterministic)
            return torch.zeros_like(actions) - torch.tensor([0.0, 0.0, 1.0]), log_prob

    hold = Hold(policy.config, policy.image_shape, 3, 3)
    episodes = run_episodes([make_env(max_steps=6)], contexts(1), hold, RuntimeConfig(execute_steps=4))
    (e,) = episodes
    assert e.meta.num_steps == 6
    assert e.meta.end_reason == "timeout"
    assert e.meta.label.success is False
    assert len(e.chunks) == 2


def test_execute_steps_beyond_chunk_size_raises(policy):
    with pytest.raises(ValueError, match="execute_steps"):
        run_episodes([make_env()], contexts(1), policy, RuntimeConfig(execute_steps=policy.chunk_size + 1))


def test_envs_and_contexts_must_pair_up(policy):
    with pytest.raises(ValueError, match="one context per env"):
        run_episodes([make_env()], contexts(2), policy, RuntimeConfig(execute_steps=4))
    assert run_episodes([], [], policy, RuntimeConfig(execute_steps=4)) == []


def test_nan_policy_is_held_faulted_and_labeled_a_failure_by_the_simulator():
    policy = NaNPolicy(PolicyConfig(hidden_dim=32, channels=4, keypoints=4, chunk_size=4), (32, 32), 3, 3)
    ctxs = contexts(2)
    safety = SafetyFilter(SafetyConfig(), action_dim=3)
    episodes = run_episodes([make_env() for _ in ctxs], ctxs, policy, RuntimeConfig(execute_steps=4), safety=safety)
    assert safety.counters.faults == 2
    for e in episodes:
        assert e.meta.end_reason.startswith("fault")
        assert e.meta.label.source == "sim" and e.reward == 0.0  # the worst rollouts stay in their groups
        assert e.meta.num_steps == 1
        assert len(e.steps) == 1
        np.testing.assert_array_equal(e.steps[0].action, np.zeros(3, np.float32))
        assert np.isnan(e.chunks[0].actions).all()  # the raw sample is kept for inspection
    assert success_rate(episodes) == 0.0


@pytest.mark.parametrize("limit", ["rate", "narrower bounds"])
def test_a_command_changed_beyond_the_policys_bounds_is_marked_limited(limit):
    policy = tiny_policy(seed=3, min_std=0.5, max_std=1.0)  # wide exploration: bounds clips and big jumps
    rate = WorkspaceCalibration.model_validate({
        "box": {"low": [-9.0, -9.0], "high": [9.0, 9.0]}, "state_position": [0, 1], "action_position": [0, 1],
        "metres_per_action": 0.025, "max_command_change": 0.3,
    })  # fmt: skip
    if limit == "rate":
        safety = SafetyFilter(SafetyConfig(), 3, workspace=rate)
    else:
        safety = SafetyFilter(SafetyConfig(action_low=-0.5, action_high=0.5), 3)
    ctxs = contexts(4)
    torch.manual_seed(0)
    episodes = run_episodes([make_env() for _ in ctxs], ctxs, policy, RuntimeConfig(execute_steps=4), safety=safety)
    steps = [(e, s) for e in episodes for s in e.steps]
    for e, s in steps:
        planned = e.chunks[s.chunk_index].actions[s.step % 4]
        assert s.safety_limited == (not np.allclose(s.action, np.clip(planned, -1.0, 1.0), atol=1e-6))
        assert s.safety_clipped or not s.safety_limited
    assert any(s.safety_limited for _, s in steps)
    if limit == "rate":  # a clip to the policy's own bounds alone is no limit: PPO scores it as sent
        assert any(s.safety_clipped and not s.safety_limited for _, s in steps)


def test_sink_receives_every_event(policy):
    sink = RecordingSink()
    ctxs = contexts(2)
    on_step_calls: list[int] = []
    episodes = run_episodes(
        [make_env(max_steps=8) for _ in ctxs],
        ctxs,
        policy,
        RuntimeConfig(execute_steps=2),
        sink=sink,
        on_step=on_step_calls.append,
    )
    for e in episodes:
        mine = [kind for kind, eid in sink.events if eid == e.meta.episode_id]
        assert mine[0] == "begin" and mine[-1] == "end"
        assert mine.count("chunk") == len(e.chunks)
        assert mine.count("step") == len(e.steps)
    assert len(on_step_calls) == max(e.meta.num_steps for e in episodes)
    assert on_step_calls[0] == 2


def test_deterministic_rollouts_repeat_exactly(policy):
    ctxs = contexts(3)
    runs = [
        run_episodes(
            [make_env(max_steps=10) for _ in ctxs], ctxs, policy, RuntimeConfig(execute_steps=4), deterministic=True
        )
        for _ in range(2)
    ]
    for a, b in zip(*runs, strict=True):
        assert a.meta.num_steps == b.meta.num_steps
        np.testing.assert_array_equal(np.stack([s.action for s in a.steps]), np.stack([s.action for s in b.steps]))


def test_episode_buffer_keeps_finished_episodes(policy):
    buffer = EpisodeBuffer()
    episodes = run_episodes([make_env(max_steps=5)], contexts(1), policy, RuntimeConfig(execute_steps=4), sink=buffer)
    assert len(buffer.episodes) == 1
    assert buffer.episodes[0].meta.episode_id == episodes[0].meta.episode_id
    assert len(buffer.episodes[0].steps) == len(episodes[0].steps)


def test_success_rate_counts_labeled_only():
    from conftest import fake_episode

    c = contexts(1)[0]
    episodes = [fake_episode(c, 1.0), fake_episode(c, 0.0), fake_episode(c, 1.0), fake_episode(c, None)]
    assert success_rate(episodes) == pytest.approx(2 / 3)
    assert math.isnan(success_rate([]))
    assert Label(True, "sim").reward == 1.0


class CountingEnv(PickEnv):
    """The built-in task, counting the steps it was asked to render."""

    def __init__(self) -> None:
        super().__init__(image_size=IMAGE_SIZE, max_steps=20)
        self.rendered: list[bool] = []

    def step(self, action, render=True):
        self.rendered.append(render)
        return super().step(action, render)


KEPT = {0: {0, 4, 8, 12, 16}, 2: set(range(0, 20, 2)), 1: set(range(20))}  # frame_every -> steps with frames


@pytest.mark.parametrize("frame_every", sorted(KEPT))
def test_simulators_render_only_the_frames_the_policy_and_the_log_need(policy, frame_every: int) -> None:
    with torch.no_grad():
        policy.mean_head.bias[2::3] = -5.0  # the gripper never closes: episodes run all 20 steps
    env = CountingEnv()
    config = RuntimeConfig(execute_steps=4, frame_every=frame_every)
    (episode,) = run_episodes([env], contexts(1), policy, config, deterministic=True)
    assert episode.meta.num_steps == 20
    # the observation after step t is that of step t + 1 (the last one, 20, is never looked at)
    assert {t + 1 for t, render in enumerate(env.rendered) if render} - {20} == KEPT[frame_every] - {0}
    assert {s.step for s in episode.steps if s.observation.images} == KEPT[frame_every]
    assert all(obs.images for obs in episode.chunk_observations)  # every chunk was planned from a picture


def test_a_re_plan_from_an_observation_without_images_is_refused(policy) -> None:
    controller = EpisodeController(policy, RuntimeConfig(execute_steps=4), SafetyFilter(SafetyConfig(), 3), [])
    env = make_env()
    (context,) = contexts(1)
    observation = env.reset(context)
    controller.begin(0, context)
    with pytest.raises(ValueError, match="without camera images"):
        controller.tick({0: replace(observation, images={})})
