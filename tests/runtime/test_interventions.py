"""A person taking over an episode: the same safety filter, steps flagged, the policy re-planning on release,
and what RIPT learns from it (intervened steps never in the PPO batch, always in the imitation batch)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_env, tiny_policy
from hypothesis import given, settings
from hypothesis import strategies as st

from ript_robot.config import RIPTConfig, RuntimeConfig
from ript_robot.envs.pick import GRASP_RADIUS, PickEnv, ScriptedOperator, make_contexts
from ript_robot.rl.ppo import batch_for
from ript_robot.rl.sampling import Group
from ript_robot.runtime.loop import run_episodes
from ript_robot.types import Label


class WindowOperator:
    """Takes over from step `start` for `length` steps of every episode, commanding `command`, then lets go."""

    def __init__(self, start: int, length: int, command: tuple[float, float, float] = (0.5, -0.5, -1.0)):
        self.start, self.length, self.command = start, length, np.array(command, np.float32)
        self.seen: list[tuple[int, bool]] = []  # (env step, whether it was in control)

    def __call__(self, env: PickEnv, proposed: np.ndarray | None) -> np.ndarray | None:
        step = env.spec.max_steps - env.steps_left
        self.seen.append((step, proposed is None))
        return self.command if self.start <= step < self.start + self.length else None


def contexts(n: int):
    return make_contexts("lab_a", range(n), tasks=("pick up the green block",))


@settings(max_examples=15, deadline=None)
@given(start=st.integers(0, 12), length=st.integers(1, 10), execute=st.sampled_from([1, 2, 4]))
def test_a_takeover_is_flagged_filtered_and_the_policy_replans_from_the_newest_observation_on_release(
    start: int, length: int, execute: int
) -> None:
    policy, operator = tiny_policy(), WindowOperator(start, length)
    config = RuntimeConfig(execute_steps=execute)
    (episode,) = run_episodes([make_env(max_steps=30)], contexts(1), policy, config, intervener=operator)
    steps = episode.steps
    flagged = [s.step for s in steps if s.intervened]
    assert flagged == [t for t in range(start, start + length) if t < len(steps)]
    for s in steps:
        if s.intervened:  # the person's command, through the same filter, with its frames kept for imitation
            np.testing.assert_allclose(s.action, np.clip(operator.command, -1, 1))
            assert s.observation.images
    assert episode.meta.interventions == (1 if flagged else 0)
    assert episode.meta.intervened_steps == len(flagged)
    if flagged and start + length < len(steps):  # released: a fresh chunk, planned from the release step
        released = steps[start + length]
        assert released.chunk_index == steps[start + length - 1].chunk_index + 1
        assert episode.chunk_observations[released.chunk_index].timestamp == released.observation.timestamp
    # an episode a person took over is the policy's failure, whatever its label
    if flagged:
        assert episode.reward == 0.0


def test_intervened_steps_never_enter_the_ppo_batch_and_are_what_imitation_fits(policy) -> None:
    operator = WindowOperator(0, 4)  # from the first step: the episode is certain to reach the takeover
    runtime = RuntimeConfig(execute_steps=2)
    rescued = run_episodes([make_env(max_steps=12)], contexts(1), policy, runtime, intervener=operator)[0]
    other = run_episodes([make_env(max_steps=12)], contexts(1), policy, runtime)[0]
    other.meta.label = Label(True, "operator")  # a success beside the rescue: the group has a PPO signal
    assert rescued.meta.interventions == 1 and rescued.reward == 0.0 and other.reward == 1.0
    batch = batch_for(policy, [Group(rescued.meta.context, [rescued, other])], RIPTConfig(imitation_coef=1.0))
    # PPO credits exactly the policy's own executed actions; the rescue's get the failure's advantage
    mine = slice(0, len(rescued.chunks))
    assert batch.mask[mine].sum().item() == sum(not s.intervened for s in rescued.steps)
    assert (batch.advantages[mine] < 0).all() and (batch.advantages[len(rescued.chunks) :] > 0).all()
    assert batch.executed_actions == sum(not s.intervened for s in rescued.steps) + len(other.steps)
    # imitation: one chunk per intervened step, the person's next commands of the same takeover
    h = policy.chunk_size
    assert batch.imitation is not None and len(batch.imitation) == 4
    assert batch.imitation.mask.sum(dim=1).tolist() == [float(min(h, 4 - i)) for i in range(4)]
    assert np.allclose(batch.imitation.actions[0, 0].numpy(), operator.command)
    assert batch.intervened_steps == 4
    assert (
        batch_for(policy, [Group(rescued.meta.context, [rescued, other])], RIPTConfig(imitation_coef=0.0)).imitation
        is None
    )


def test_the_scripted_operator_rescues_a_grasp_beside_the_block_and_never_a_good_one() -> None:
    env = PickEnv(max_steps=50)
    env.reset(make_contexts("workcell", [3])[0])
    operator = ScriptedOperator()
    close = np.array([0.0, 0.0, 1.0], np.float32)
    assert np.linalg.norm(env.gripper_position - env.target_position) > GRASP_RADIUS
    assert operator(env, close) is not None  # a miss about to happen: take over
    assert operator(env, np.array([0.2, 0.1, -1.0], np.float32)) is None  # moving, time left: watch
    command = operator(env, None)
    while command is not None and not (result := env.step(command)).done:
        command = operator(env, None)
    assert result.success  # the rescue grasps the named block
    env.reset(make_contexts("workcell", [3])[0])
    while np.linalg.norm(env.gripper_position - env.target_position) >= 0.3 * GRASP_RADIUS:
        env.step(operator(env, None))
    assert operator(env, close) is None  # about to grasp correctly: left alone


def test_a_dawdling_policy_is_taken_over_while_the_expert_can_still_reach_the_block() -> None:
    env = PickEnv(max_steps=40)
    env.reset(make_contexts("workcell", [5])[0])
    operator, still = ScriptedOperator(), np.array([0.0, 0.0, -1.0], np.float32)
    while operator(env, still) is None:
        env.step(still)
    command = operator(env, None)
    while not (result := env.step(command)).done:
        command = operator(env, None)
    assert result.success and result.reason == "grasped"


@pytest.mark.parametrize("imitating", [True, False])
def test_groups_a_person_corrected_are_kept_when_their_corrections_are_imitated(policy, imitating: bool) -> None:
    from ript_robot.rl.sampling import ContextPool, GroupSampler, collect_groups

    pool = ContextPool(contexts(2), 0)
    config = RIPTConfig(rollouts_per_context=2, groups_per_iteration=2, max_sampling_rounds=1,
                        imitation_coef=1.0 if imitating else 0.0)  # fmt: skip
    sampler = GroupSampler.for_config(pool, config)
    operator = WindowOperator(0, 100)  # the person does it all: every rollout a rescue, every group uniform

    def rollout(cs):
        return run_episodes(
            [make_env(max_steps=6) for _ in cs], cs, policy, RuntimeConfig(execute_steps=2), intervener=operator
        )

    groups, stats = collect_groups(sampler, rollout, 2)
    assert stats.corrected == (2 if imitating else 0)
    assert len(groups) == (2 if imitating else 0)
