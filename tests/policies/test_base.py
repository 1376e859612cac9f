"""The bounded likelihood: continuous policies score the command the arm received, clipped to their bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import observations, tiny_policy
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Laplace, Normal

from ript_robot.config import PolicyConfig
from ript_robot.envs.base import EnvSpec
from ript_robot.policies import load_policy, make_policy
from ript_robot.policies.base import bounded_log_prob

FAMILIES = {"gaussian": Normal, "laplace": Laplace}


@settings(max_examples=60, deadline=None)
@given(
    family=st.sampled_from(sorted(FAMILIES)),
    loc=st.floats(-3.0, 3.0),
    scale=st.floats(0.05, 2.0),
    low=st.floats(-2.0, 0.0),
    width=st.floats(0.1, 3.0),
)
def test_the_bounded_law_is_a_probability_distribution_over_the_commands_sent(family, loc, scale, low, width):
    high = low + width
    dist = FAMILIES[family](torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
    grid = torch.linspace(low, high, 20001, dtype=torch.float64)[1:-1]
    inside = torch.trapezoid(bounded_log_prob(dist, grid, low, high).exp(), grid)
    at_bounds = bounded_log_prob(dist, torch.tensor([low - 1.0, high + 1.0], dtype=torch.float64), low, high)
    assert (inside + at_bounds.exp().sum()).item() == pytest.approx(1.0, abs=2e-3)
    # the mass at a bound is what a sample beyond it gets, wherever it lands
    beyond = torch.tensor([high, high + 0.5, high + 50.0], dtype=torch.float64)
    torch.testing.assert_close(bounded_log_prob(dist, beyond, low, high), at_bounds[1].expand(3))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_mass_at_a_bound_is_the_share_of_samples_clipped_to_it(family):
    dist = FAMILIES[family](torch.tensor([0.9, -0.7]), torch.tensor([0.3, 0.5]))
    torch.manual_seed(0)
    samples = dist.sample((200_000,))
    sent = samples.clamp(-1.0, 1.0)
    scored = bounded_log_prob(dist, torch.tensor([[5.0, -5.0]]), -1.0, 1.0).exp()[0]
    share = torch.stack([(sent[:, 0] == 1.0).double().mean(), (sent[:, 1] == -1.0).double().mean()])
    torch.testing.assert_close(share.float(), scored, atol=4e-3, rtol=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_far_tails_keep_finite_values_and_gradients(family):
    loc = torch.tensor([-40.0, 0.0, 40.0], requires_grad=True)
    dist = FAMILIES[family](loc, torch.full((3,), 0.05))
    out = bounded_log_prob(dist, torch.tensor([1.0, 1.0, -1.0]), -1.0, 1.0)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(loc.grad).all()
    assert out[0] < -100 and out[2] < -100  # the bound is 800 scales from the mean: nearly impossible
    assert loc.grad[0] > 0 and loc.grad[2] < 0  # and raising its likelihood moves the mean toward it


@pytest.mark.parametrize("distribution", sorted(FAMILIES))
def test_a_policy_scores_clipped_samples_as_sent_in_act_and_in_rescoring(distribution):
    policy = tiny_policy(distribution=distribution, min_std=0.5, max_std=1.0)
    with torch.no_grad():
        policy.mean_head.bias.fill_(0.9)  # most samples land beyond +1
    obs = observations(2)
    torch.manual_seed(0)
    chunks = policy.act(obs)
    actions = torch.from_numpy(np.stack([c.actions for c in chunks]))
    assert (actions > 1.0).any()
    with torch.no_grad():
        rescored = policy.log_prob(policy.preprocess(obs), actions)
        clipped = policy.log_prob(policy.preprocess(obs), actions.clamp(-1.0, 1.0))
    reported = torch.from_numpy(np.stack([c.step_log_prob for c in chunks]))
    torch.testing.assert_close(reported, rescored, atol=1e-4, rtol=0)
    torch.testing.assert_close(rescored, clipped, atol=1e-4, rtol=0)  # only what was sent matters


def test_the_bounds_come_from_the_env_and_travel_with_the_checkpoint(tmp_path):
    spec = EnvSpec(cameras={"top": (32, 32)}, state_dim=3, action_dim=2, control_hz=10.0, max_steps=5,
                   action_low=-0.5, action_high=2.0)  # fmt: skip
    policy = make_policy(PolicyConfig(hidden_dim=16, channels=4, keypoints=4, chunk_size=2), spec)
    assert (policy.action_low, policy.action_high) == (-0.5, 2.0)
    np.testing.assert_array_equal(policy.sent(np.array([-1.0, 3.0])), [-0.5, 2.0])
    loaded = load_policy(policy.save(tmp_path / "p"))
    assert (loaded.action_low, loaded.action_high) == (-0.5, 2.0)
    with pytest.raises(ValueError, match="action_bounds"):
        type(policy)(policy.config, (32, 32), 3, 2, (), (1.0, 1.0))


@pytest.mark.parametrize("distribution", sorted(FAMILIES))
def test_a_dimension_read_by_its_sign_is_scored_by_the_probability_of_that_sign(distribution):
    """policy.binary_dims: the gripper command the arm receives is open or close, so any two samples on the
    same side of 0 score alike, act() reports that score, and it is P(close) or P(open) under the policy."""
    policy = tiny_policy(distribution=distribution, min_std=0.5, max_std=1.0, binary_dims=[2])
    obs = observations(3)
    torch.manual_seed(0)
    chunks = policy.act(obs)
    actions = torch.from_numpy(np.stack([c.actions for c in chunks]))
    batch = policy.preprocess(obs)
    with torch.no_grad():
        rescored = policy.log_prob(batch, actions)
        moved = actions.clone()
        moved[..., 2] = torch.where(actions[..., 2] > 0, 0.001, -0.001)  # same sign, other values
        dist = policy.distribution(batch)
        close = 1.0 - FAMILIES[distribution](dist.loc[..., 2], dist.scale[..., 2]).cdf(torch.tensor(0.0))
    reported = torch.from_numpy(np.stack([c.step_log_prob for c in chunks]))
    torch.testing.assert_close(reported, rescored, atol=1e-4, rtol=0)
    torch.testing.assert_close(policy.log_prob(batch, moved).detach(), rescored, atol=1e-4, rtol=0)
    others = bounded_log_prob(dist, actions, -1.0, 1.0)[..., :2].sum(-1).detach()
    expected = others + torch.where(actions[..., 2] > 0, close, 1.0 - close).log()
    torch.testing.assert_close(rescored, expected, atol=1e-4, rtol=0)
