from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from conftest import make_env, tiny_policy

from ript_robot.config import RIPTConfig, RuntimeConfig
from ript_robot.envs.pick import make_contexts
from ript_robot.rl.ppo import build_batch, credited, ppo_loss, ppo_update
from ript_robot.rl.sampling import Group
from ript_robot.runtime.loop import run_episodes
from ript_robot.types import ActionChunk, Episode, EpisodeMeta, Label, StepRecord

CLIP_LOW, CLIP_HIGH = 0.2, 0.28


def test_ppo_loss_matches_hand_computation():
    ratios = [[1.5, 0.5, 1.1], [1.5, 0.5, 1.0]]
    old = torch.tensor([[0.3, -1.0, 0.0], [-0.2, 0.4, 1.0]])
    new = (old + torch.log(torch.tensor(ratios))).requires_grad_(True)
    advantages = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])

    loss, diag = ppo_loss(new, old, advantages, mask, CLIP_LOW, CLIP_HIGH)

    # adv +1: ratio 1.5 clips to 1.28 (-1.28); 0.5 keeps the unclipped -0.5 (pessimistic max); 1.1 -> -1.1
    # adv -2: ratio 1.5 keeps 3.0 (unclipped is larger); 0.5 clips to 0.8 -> 1.6; last action masked out
    expected = (-1.28 - 0.5 - 1.1 + 3.0 + 1.6) / 5
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    # ratios outside [0.8, 1.28] among executed actions: 1.5, 0.5, 1.5, 0.5
    assert diag["clipfrac"] == pytest.approx(4 / 5, abs=1e-6)
    executed = [r for row, m in zip(ratios, mask.tolist(), strict=True) for r, k in zip(row, m, strict=True) if k]
    k3 = sum((r - 1.0) - math.log(r) for r in executed) / len(executed)
    assert diag["approx_kl"] == pytest.approx(k3, abs=1e-5)
    assert diag["approx_kl"] >= 0.0
    assert diag["ratio_mean"] == pytest.approx(sum(executed) / len(executed), abs=1e-5)

    # gradients flow only through unclipped, executed terms: d/dlogp of -adv * ratio is -adv * ratio
    loss.backward()
    expected_grad = torch.tensor([[0.0, -0.5, -1.1], [3.0, 0.0, 0.0]]) / 5
    torch.testing.assert_close(new.grad, expected_grad, atol=1e-5, rtol=0)


def test_ppo_loss_at_ratio_one_is_minus_mean_advantage():
    old = torch.randn(3, 4)
    advantages = torch.tensor([1.0, -0.5, 0.25])
    mask = torch.ones(3, 4)
    loss, diag = ppo_loss(old.clone(), old, advantages, mask, CLIP_LOW, CLIP_HIGH)
    assert loss.item() == pytest.approx(-advantages.mean().item(), abs=1e-6)
    assert diag["clipfrac"] == 0.0
    assert diag["approx_kl"] == pytest.approx(0.0, abs=1e-7)
    assert diag["ratio_mean"] == pytest.approx(1.0, abs=1e-6)


def _observations(n: int):
    env = make_env()
    contexts = make_contexts("lab_a", range(n), tasks=("pick up the red block",))
    return contexts, [env.reset(c) for c in contexts]


def _episode(
    context,
    obs,
    reward,
    chunk_steps: list[int],
    h: int = 4,
    fill: float = 0.0,
    clipped: frozenset[int] = frozenset(),
    limited: frozenset[int] = frozenset(),
) -> Episode:
    """An episode whose chunk k was executed for chunk_steps[k] steps; the safety filter clipped steps `clipped`
    to the policy's bounds and changed steps `limited` beyond them."""
    label = None if reward is None else Label(success=bool(reward), source="sim")
    meta = EpisodeMeta(f"{context.context_id}-{fill}", context, 0, "test", 0.0, label=label)
    chunks = [
        ActionChunk(np.full((h, 3), fill + k, np.float32), np.full(h, -(fill + k), np.float32))
        for k in range(len(chunk_steps))
    ]
    steps = []
    for k, n in enumerate(chunk_steps):
        for _ in range(n):
            t = len(steps)
            changed, beyond = t in clipped | limited, t in limited
            steps.append(
                StepRecord(t, 0.0, obs, np.zeros(3, np.float32), k, safety_clipped=changed, safety_limited=beyond)
            )
    return Episode(meta, steps, chunks, [obs] * len(chunks))


def test_build_batch_skips_unlabeled_and_zero_advantage_episodes(policy):
    contexts, obs = _observations(2)
    informative = Group(
        contexts[0],
        [
            _episode(contexts[0], obs[0], 1.0, [4, 2], fill=1.0),  # advantage +1
            _episode(contexts[0], obs[0], 0.0, [3], fill=10.0),  # advantage -1
            _episode(contexts[0], obs[0], None, [4, 4], fill=20.0),  # unlabeled: skipped
        ],
    )
    uniform = Group(
        contexts[1],
        [_episode(contexts[1], obs[1], 1.0, [4], fill=30.0), _episode(contexts[1], obs[1], 1.0, [4], fill=40.0)],
    )
    batch = build_batch(policy, [informative, uniform])
    assert batch is not None
    assert len(batch) == 3  # two chunks of the success, one of the failure
    torch.testing.assert_close(batch.advantages, torch.tensor([1.0, 1.0, -1.0]))
    torch.testing.assert_close(
        batch.mask, torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    )
    torch.testing.assert_close(batch.actions[:, 0, 0], torch.tensor([1.0, 2.0, 10.0]))
    torch.testing.assert_close(batch.old_log_prob[:, 0], torch.tensor([-1.0, -2.0, -10.0]))
    assert batch.inputs["image"].shape == (3, 1, 32, 32, 3)  # chunks, cameras, H, W, RGB
    assert batch.inputs["image"].dtype == torch.uint8

    sub = batch.select(torch.tensor([2]))
    assert len(sub) == 1
    torch.testing.assert_close(sub.advantages, torch.tensor([-1.0]))


def test_actions_changed_beyond_the_bounds_are_never_credited_and_bound_clips_are(policy):
    contexts, obs = _observations(1)
    group = Group(
        contexts[0],
        [
            _episode(contexts[0], obs[0], 1.0, [4, 3], fill=1.0, clipped=frozenset({2, 6}), limited=frozenset({1, 5})),
            _episode(contexts[0], obs[0], 0.0, [2], fill=10.0, limited=frozenset({0, 1})),
        ],
    )
    batch = build_batch(policy, [group])
    torch.testing.assert_close(
        batch.mask, torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    )
    assert (batch.executed_actions, batch.clipped_actions, batch.limited_actions) == (9, 6, 4)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    out = ppo_update(policy, optimizer, batch, RIPTConfig(ppo_epochs=1, minibatch_size=8))
    assert out["clipped_share"] == pytest.approx(6 / 9) and out["limited_share"] == pytest.approx(4 / 9)


def test_a_token_is_credited_only_when_none_of_its_executed_actions_was_limited():
    limited = np.array([False, False, False, True, False, False])
    # span 2: tokens (0,1) ran clean, (2,3) had action 3 limited, (4,5) did not run (4 actions executed)
    np.testing.assert_array_equal(credited(4, limited, 2), [True, False, False, False, False, False])
    np.testing.assert_array_equal(credited(5, np.zeros(6, bool), 2), [True, False, True, False, True, False])
    np.testing.assert_array_equal(credited(3, limited, 1), [True, True, True, False, False, False])


def test_build_batch_without_signal_is_none(policy):
    contexts, obs = _observations(1)
    groups = [
        Group(contexts[0], [_episode(contexts[0], obs[0], r, [4], fill=i) for i, r in enumerate([0.0, 0.0])]),
        Group(contexts[0], [_episode(contexts[0], obs[0], r, [4], fill=i) for i, r in enumerate([1.0, None])]),
    ]
    assert build_batch(policy, groups) is None
    assert build_batch(policy, []) is None


def _rollout_groups(policy, k: int = 4):
    contexts = make_contexts("lab_a", range(2), tasks=("pick up the red block", "pick up the blue block"))[:2]
    trials = [c for c in contexts for _ in range(k)]
    torch.manual_seed(1)
    episodes = run_episodes([make_env(max_steps=10) for _ in trials], trials, policy, RuntimeConfig(execute_steps=3))
    groups = []
    for g, context in enumerate(contexts):
        members = episodes[g * k : (g + 1) * k]
        for j, episode in enumerate(members):  # mixed labels so every group carries signal
            episode.meta.label = Label(success=j % 2 == 0, source="operator")
        groups.append(Group(context, members))
    return groups


def test_ppo_update_on_real_rollouts():
    policy = tiny_policy(seed=0)
    groups = _rollout_groups(policy)
    batch = build_batch(policy, groups)
    assert batch is not None
    before = [p.detach().clone() for p in policy.parameters()]
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    config = RIPTConfig(ppo_epochs=1, minibatch_size=8)
    out = ppo_update(policy, optimizer, batch, config, torch.Generator().manual_seed(0))
    # the policy that sampled the batch is the one updated: the ratio starts at 1
    assert out["initial_ratio_error"] < 1e-4
    assert out["samples"] == float(len(batch))
    assert all(math.isfinite(out[k]) for k in ("loss", "approx_kl", "clipfrac", "ratio_mean", "grad_norm"))
    changed = [not torch.equal(b, p.detach()) for b, p in zip(before, policy.parameters(), strict=True)]
    assert any(changed)


def test_ppo_update_raises_likelihood_of_positive_advantage_actions():
    policy = tiny_policy(seed=0)
    batch = build_batch(policy, _rollout_groups(policy))
    assert batch is not None
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    ppo_update(policy, optimizer, batch, RIPTConfig(ppo_epochs=4, minibatch_size=8), torch.Generator().manual_seed(0))
    with torch.no_grad():
        delta = ((policy.log_prob(batch.inputs, batch.actions) - batch.old_log_prob) * batch.mask).sum(1)
        counted = batch.mask.sum(1) > 0  # chunks whose every executed action was clipped carry no credit
        delta = delta / batch.mask.sum(1).clamp(min=1)
    positive = delta[(batch.advantages > 0) & counted].mean()
    negative = delta[(batch.advantages < 0) & counted].mean()
    assert positive > 0.0
    assert positive > negative


def test_initial_ratio_error_detects_stale_log_probs():
    policy = tiny_policy(seed=0)
    batch = build_batch(policy, _rollout_groups(policy))
    assert batch is not None
    batch.old_log_prob = batch.old_log_prob + 0.1  # as if another policy had sampled the batch
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    out = ppo_update(policy, optimizer, batch, RIPTConfig(ppo_epochs=1, minibatch_size=64))
    assert out["initial_ratio_error"] == pytest.approx(1.0 - math.exp(-0.1), abs=1e-4)


def test_target_kl_ends_an_update_that_moves_the_policy_too_far():
    batch = build_batch(tiny_policy(seed=0), _rollout_groups(tiny_policy(seed=0)))
    assert batch is not None
    runs = {}
    for target_kl in (None, 1e-3):
        policy = tiny_policy(seed=0)
        optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)  # large steps: the KL grows fast
        config = RIPTConfig(ppo_epochs=4, minibatch_size=8, target_kl=target_kl)
        runs[target_kl] = ppo_update(policy, optimizer, batch, config, torch.Generator().manual_seed(0))
    assert runs[None]["minibatches"] == 4 * math.ceil(len(batch) / 8)
    assert 1 <= runs[1e-3]["minibatches"] < runs[None]["minibatches"]


def test_a_token_policy_is_credited_and_averaged_per_token():
    policy = tiny_policy(family="quest")  # 2 actions per token: the log-prob sits on each token's first action
    batch = build_batch(policy, _rollout_groups(policy))
    assert batch.mask[:, 1::2].sum() == 0 and batch.mask[:, ::2].sum() > 0
    shifted = batch.old_log_prob + 0.1 * (torch.arange(policy.chunk_size) % 2 == 0)  # every token's log-prob
    _, diag = ppo_loss(shifted, batch.old_log_prob, batch.advantages, batch.mask, CLIP_LOW, CLIP_HIGH)
    assert diag["ratio_mean"] == pytest.approx(math.exp(0.1), rel=1e-5)  # not diluted by log-prob-0 actions


def test_episode_weighting_gives_every_episode_the_same_share_of_the_loss(policy):
    """A long failure (6 credited actions) and a short success (3) weigh alike; per action, 2:1."""
    contexts, obs = _observations(1)
    group = Group(
        contexts[0],
        [_episode(contexts[0], obs[0], 1.0, [3], fill=1.0), _episode(contexts[0], obs[0], 0.0, [4, 2], fill=10.0)],
    )
    by_action, by_episode = build_batch(policy, [group]), build_batch(policy, [group], "episode")
    assert by_action.weight is None and torch.equal(by_action.loss_mask(), by_action.mask)
    per_episode = by_episode.loss_mask().sum(dim=1)
    torch.testing.assert_close(per_episode[:1].sum(), torch.tensor(1.0))  # the success: one chunk
    torch.testing.assert_close(per_episode[1:].sum(), torch.tensor(1.0))  # the failure: two chunks
    # the loss is a weighted mean: a success-only and a failure-only view pull with equal total weight
    out = ppo_update(policy, torch.optim.Adam(policy.parameters(), lr=1e-3), by_episode, RIPTConfig(ppo_epochs=1))
    assert math.isfinite(out["loss"])
    with pytest.raises(ValueError, match="'action' or 'episode'"):
        build_batch(policy, [group], "token")


def test_successful_episodes_executed_actions_are_imitated_and_pull_the_mean_toward_them(policy):
    """Self-imitation: only what a success executed (not the unexecuted tail, not limited steps) is fitted,
    and the behaviour-cloning term moves the deterministic action toward it; without its weight nothing changes."""
    contexts, obs = _observations(1)
    success = _episode(contexts[0], obs[0], 1.0, [3, 1], fill=0.5, limited=frozenset({1}))
    group = Group(contexts[0], [success, _episode(contexts[0], obs[0], 0.0, [4], fill=-0.5)])
    assert build_batch(policy, [group]).imitation is None
    batch = build_batch(policy, [group], imitate_successes=True)
    assert batch.imitation is not None and len(batch.imitation) == 2  # the success's two chunks
    torch.testing.assert_close(batch.imitation.mask, torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))

    # a success and a failure that executed the same actions: PPO's pulls cancel, only imitation moves the mean
    same = Group(contexts[0], [_episode(contexts[0], obs[0], r, [4], fill=0.5) for r in (1.0, 0.0)])
    batch = build_batch(policy, [same], imitate_successes=True)
    with torch.no_grad():
        batch.old_log_prob = policy.log_prob(batch.inputs, batch.actions)  # on-policy: every ratio starts at 1
    target = batch.imitation.actions[0]

    def after_update(coef: float) -> tuple[float, dict[str, float]]:
        """How far the deterministic chunk lands from the imitated one after one update from the same start."""
        learner = copy.deepcopy(policy)
        config = RIPTConfig(ppo_epochs=4, minibatch_size=8, imitation_coef=coef, imitate_successes=True)
        out = ppo_update(learner, torch.optim.Adam(learner.parameters(), lr=1e-2), batch, config)
        with torch.no_grad():
            return float((learner.distribution(batch.imitation.inputs).mean[0] - target).norm()), out

    with torch.no_grad():
        start = float((policy.distribution(batch.imitation.inputs).mean[0] - target).norm())
    (imitating, out), (plain, without) = after_update(1.0), after_update(0.0)
    assert out["imitated_actions"] == 4.0 and math.isfinite(out["bc_loss"])
    assert "bc_loss" not in without and without["imitated_actions"] == 0.0
    assert plain == pytest.approx(start, rel=0.05)  # Adam turns rounding-level gradients into small steps
    assert imitating < 0.9 * plain
