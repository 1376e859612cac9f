"""Normalized states and actions: statistics from the demonstrations, in the checkpoint, applied inside the policy.

Outside the policy everything stays in robot units (the chunks `act()` returns, the stored actions, the
safety filter); inside, the family works in normalized units, and re-scoring a chunk it sampled gives
exactly the log-probability it reported, for every family."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import chunk_extras, observations, tiny_policy

from ript_robot.config import SFTConfig
from ript_robot.policies import load_policy
from ript_robot.rl.sft import behaviour_cloning, chunk_dataset
from ript_robot.types import CheckpointError, Context, Episode, EpisodeMeta, StepRecord

OFFSET, SPREAD = np.array([40.0, -7.0, 0.5]), np.array([5.0, 0.2, 0.5])  # robot units far from the policy's


def demonstrations(n_steps: int = 24, seed: int = 0) -> list[Episode]:
    """Steps whose states and actions live at OFFSET with spread SPREAD (an arm in millimetres, say)."""
    rng = np.random.default_rng(seed)
    obs = observations(3)
    episodes = []
    for i, first in enumerate(obs):
        steps = []
        for t in range(n_steps):
            state = (OFFSET + SPREAD * rng.normal(size=3)).astype(np.float32)
            action = (OFFSET + SPREAD * np.tanh(rng.normal(size=3))).astype(np.float32)
            steps.append(StepRecord(t, float(t), replace(first, state=state), action, 0))
        meta = EpisodeMeta(
            f"demo-{i}", Context(f"lab_a/0/{i}", first.instruction, i), 0, "test", 0.0, kind="demonstration"
        )
        episodes.append(Episode(meta, steps, [], []))
    return episodes


@pytest.mark.parametrize("family", ["chunked", "quest", "oft", "flow", "flow_vlm"])
@pytest.mark.parametrize("mode", ["mean_std", "quantile"])
def test_every_family_fits_its_units_on_demonstrations_and_rescores_what_it_sampled_exactly(family, mode) -> None:
    policy = tiny_policy(family=family, normalization=mode)
    assert policy.needs_statistics
    demos = demonstrations()
    chunk_dataset(policy, demos)  # the first demonstrations fit the statistics
    assert not policy.needs_statistics
    states = np.stack([s.observation.state for e in demos for s in e.steps])
    if mode == "mean_std":
        np.testing.assert_allclose(policy.normalizer.state_shift.numpy(), states.mean(0), rtol=1e-5)
    obs = [replace(o, state=states[i]) for i, o in enumerate(observations(4))]
    chunks = policy.act(obs)
    actions = torch.from_numpy(np.stack([c.actions for c in chunks]))
    # robot units out: near the demonstrations' offset, not near the policy's 0
    assert np.abs(actions.mean((0, 1)).numpy() - OFFSET)[0] < 20.0
    rescored = policy.log_prob(policy.preprocess(obs), actions, chunk_extras(chunks))
    reported = torch.from_numpy(np.stack([c.step_log_prob for c in chunks]))
    torch.testing.assert_close(rescored, reported, atol=1e-4, rtol=1e-5)


def test_the_statistics_travel_in_the_checkpoint_and_a_policy_without_them_refuses_it(tmp_path) -> None:
    policy = tiny_policy(normalization="mean_std")
    chunk_dataset(policy, demonstrations())
    loaded = load_policy(policy.save(tmp_path / "normalized"))
    assert not loaded.needs_statistics
    obs = observations(2)
    a, b = policy.act(obs, deterministic=True), loaded.act(obs, deterministic=True)
    np.testing.assert_allclose(a[0].actions, b[0].actions, rtol=1e-5)
    plain = tiny_policy()
    with pytest.raises(CheckpointError, match="normalizer"):
        plain.load_weights(tmp_path / "normalized")


def test_behaviour_cloning_in_normalized_units_fits_demonstrations_far_from_zero() -> None:
    """Demonstrations at x = 40 +- 5: the normalized policy's mean lands within their spread after a short SFT; the
    plain policy, whose outputs start near 0 and whose scale is capped at max_std, is still far off."""
    errors = {}
    for mode in ("none", "mean_std"):
        policy = tiny_policy(normalization=mode)
        dataset = chunk_dataset(policy, demonstrations())
        behaviour_cloning(policy, dataset, SFTConfig(steps=150, batch_size=32, lr=3e-3), progress=False)
        chunk = policy.act(observations(1), deterministic=True)[0]
        errors[mode] = float(np.abs(chunk.actions.mean(0) - OFFSET).max())
    assert errors["mean_std"] < SPREAD[0] < errors["none"]  # within the demonstrations' own spread, or not
    assert errors["mean_std"] < 0.2 * errors["none"]
