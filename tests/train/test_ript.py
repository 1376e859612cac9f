from __future__ import annotations

import math

import torch
from conftest import make_env, tiny_policy

from ript_robot.config import RIPTConfig, RuntimeConfig
from ript_robot.envs.pick import make_contexts
from ript_robot.rl.sampling import ContextPool
from ript_robot.runtime.loop import run_episodes
from ript_robot.train.ript import RIPTLearner
from ript_robot.types import Label

CONTEXTS = make_contexts("lab_a", range(2), tasks=("pick up the red block", "pick up the green block"))
CONFIG = RIPTConfig(
    rollouts_per_context=2, groups_per_iteration=2, max_sampling_rounds=2, ppo_epochs=1, minibatch_size=8
)


def sim_rollout(policy, relabel=None):
    """Real simulated rollouts; `relabel(index)` optionally overrides the sim's label (as an operator would)."""

    def rollout(contexts):
        episodes = run_episodes(
            [make_env(max_steps=8) for _ in contexts], contexts, policy, RuntimeConfig(execute_steps=4)
        )
        if relabel is not None:
            for i, episode in enumerate(episodes):
                episode.meta.label = Label(success=relabel(i), source="operator")
        return episodes

    return rollout


def test_learner_updates_policy_and_bumps_version_on_informative_groups():
    policy = tiny_policy(seed=0)
    learner = RIPTLearner(policy, ContextPool(CONTEXTS, seed=0), CONFIG, seed=0)
    before = [p.detach().clone() for p in policy.parameters()]
    metrics = learner.step(sim_rollout(policy, relabel=lambda i: i % 2 == 0))
    assert metrics["updated"] is True
    assert metrics["iteration"] == 1
    assert metrics["policy_version"] == 1 == policy.version
    assert metrics["groups_accepted"] == 2
    assert metrics["groups_rejected"] == 0
    assert metrics["sampling_rounds"] == 1
    assert metrics["episodes"] == 4
    assert metrics["rollout_success"] == 0.5
    assert metrics["initial_ratio_error"] < 1e-4
    assert math.isfinite(metrics["loss"])
    assert any(not torch.equal(b, p) for b, p in zip(before, policy.parameters(), strict=True))


def test_learner_skips_update_when_every_group_is_uniform():
    policy = tiny_policy(seed=0)
    learner = RIPTLearner(policy, ContextPool(CONTEXTS, seed=0), CONFIG, seed=0)
    before = [p.detach().clone() for p in policy.parameters()]
    metrics = learner.step(sim_rollout(policy, relabel=lambda i: False))
    assert metrics["updated"] is False
    assert policy.version == 0
    assert metrics["groups_accepted"] == 0
    assert metrics["sampling_rounds"] == CONFIG.max_sampling_rounds
    assert metrics["rejected_all_failure"] == 2 * CONFIG.max_sampling_rounds
    assert metrics["rollout_success"] == 0.0
    assert all(torch.equal(b, p) for b, p in zip(before, policy.parameters(), strict=True))


def test_reused_groups_join_the_next_updates_scored_against_their_stored_log_probs():
    policy = tiny_policy(seed=0)
    learner = RIPTLearner(policy, ContextPool(CONTEXTS, seed=0), CONFIG.model_copy(update={"reuse_updates": 2}), seed=0)
    first = learner.step(sim_rollout(policy, relabel=lambda i: i % 2 == 0))
    assert first["replayed_groups"] == 0 and first["initial_ratio_error"] < 1e-4
    second = learner.step(sim_rollout(policy, relabel=lambda i: i % 2 == 0))
    assert second["replayed_groups"] == 2 and second["updated"]
    # the replayed chunks were sampled by v0: against the updated policy their ratio is no longer 1
    assert second["initial_ratio_error"] > first["initial_ratio_error"]
    third = learner.step(sim_rollout(policy, relabel=lambda i: False))
    assert third["replayed_groups"] == 2  # the second iteration's groups; the first's were used twice
    assert third["updated"]  # an iteration without new signal still learns from what it replays


def test_the_episode_budget_bounds_every_rollout_the_learner_samples():
    """ript.episode_budget counts dropped groups too; the learner never samples past it."""
    policy = tiny_policy(seed=0)
    config = CONFIG.model_copy(update={"episode_budget": 7})  # three groups of K=2 fit, a fourth does not
    learner = RIPTLearner(policy, ContextPool(CONTEXTS, seed=0), config, seed=0)
    rollout = sim_rollout(policy, relabel=lambda i: False)  # every group uniform: each iteration spends its budget
    spent = []
    while not learner.spent:
        spent.append(learner.step(rollout)["episodes"])
    assert spent == [6]  # 2 groups wanted x 2 rounds would be 8 episodes; the budget pays for 3 groups
    assert learner.episodes == 6
