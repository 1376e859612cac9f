from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_env, tiny_policy

from ript_robot.config import SFTConfig
from ript_robot.envs.demos import record_demonstrations
from ript_robot.envs.pick import expert_action, make_contexts
from ript_robot.rl.sft import behaviour_cloning, chunk_dataset


def demos(n_seeds: int = 3):
    env = make_env()
    return record_demonstrations(env, make_contexts("lab_a", range(n_seeds)), expert_action)


def test_chunk_dataset_has_one_sample_per_step_with_padding(policy):
    episodes = demos(1)
    dataset = chunk_dataset(policy, episodes)
    assert len(dataset) == sum(len(e.steps) for e in episodes)
    first = episodes[0]
    actions = np.stack([s.action for s in first.steps])
    np.testing.assert_array_equal(dataset.actions[0].numpy(), actions[:4])
    # sample t has min(4, T - t) recorded targets; the rest pads past the end and carries no loss
    t = len(first.steps)
    expected = [[1.0 if k < t - i else 0.0 for k in range(4)] for i in range(t)]
    np.testing.assert_array_equal(dataset.mask[:t].numpy(), expected)
    assert dataset.inputs["image"].shape[0] == len(dataset)


@pytest.mark.parametrize("family", ["chunked", "quest", "oft", "flow", "flow_vlm", "openvla_oft"])
def test_padded_targets_carry_no_loss_and_recorded_ones_do(family):
    policy = tiny_policy(family=family)
    dataset = chunk_dataset(policy, demos(1))
    tail = slice(len(dataset) - 3, len(dataset))  # the last samples reach past the end
    inputs = {k: v[tail] for k, v in dataset.inputs.items()}
    actions, mask = dataset.actions[tail], dataset.mask[tail]
    assert (mask == 0).any() and (mask == 1).any()
    # a token policy encodes a span of actions together: only spans of padding alone are free to move
    span = policy.log_prob_span
    free = (mask.reshape(len(mask), -1, span).amax(-1) == 0).repeat_interleave(span, -1)
    assert free.any()
    moved_padding = torch.where(free[..., None], actions + 5.0, actions)
    moved_target = torch.where(
        mask[..., None] > 0, torch.randn(actions.shape, generator=torch.Generator().manual_seed(1)) * 3, actions
    )

    def bc_loss(targets: torch.Tensor, stage: str) -> torch.Tensor:
        torch.manual_seed(0)  # the same draws for every call (a flow policy draws noise and flow times)
        return policy.bc_loss(inputs, targets, stage, mask)

    for stage in policy.sft_stages:
        loss = bc_loss(actions, stage)
        torch.testing.assert_close(bc_loss(moved_padding, stage), loss)
        assert not torch.isclose(bc_loss(moved_target, stage), loss)


def test_demonstrations_recorded_with_every_third_frame_give_a_sample_per_frame(policy):
    env = make_env()
    (every,) = record_demonstrations(env, make_contexts("lab_a", [0])[:1], expert_action)
    (sparse,) = record_demonstrations(env, make_contexts("lab_a", [0])[:1], expert_action, frame_every=3)
    assert [s.action.tolist() for s in sparse.steps] == [s.action.tolist() for s in every.steps]  # the same moves
    kept = [t for t, s in enumerate(sparse.steps) if s.observation.images]
    assert kept == list(range(0, len(sparse.steps), 3))
    dataset, full = chunk_dataset(policy, [sparse]), chunk_dataset(policy, [every])
    assert len(dataset) == len(kept)
    torch.testing.assert_close(dataset.actions, full.actions[kept])  # each chunk still holds the next 4 actions


def test_chunk_dataset_without_steps_raises(policy):
    with pytest.raises(ValueError, match="no demonstration steps"):
        chunk_dataset(policy, [])


def test_behaviour_cloning_reduces_bc_loss_on_expert_demos():
    policy = tiny_policy(seed=0)
    dataset = chunk_dataset(policy, demos(3))

    def full_loss() -> float:
        with torch.no_grad():
            return policy.bc_loss(dataset.inputs, dataset.actions).item()

    before = full_loss()
    losses = behaviour_cloning(policy, dataset, SFTConfig(steps=80, batch_size=32, lr=3e-3), seed=0, progress=False)
    after = full_loss()
    assert len(losses) == 80
    assert all(np.isfinite(losses))
    assert after < before - 0.2
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_behaviour_cloning_is_seeded():
    dataset = chunk_dataset(tiny_policy(), demos(1))
    config = SFTConfig(steps=5, batch_size=8, lr=1e-3)
    a = behaviour_cloning(tiny_policy(seed=1), dataset, config, seed=3, progress=False)
    b = behaviour_cloning(tiny_policy(seed=1), dataset, config, seed=3, progress=False)
    assert a == b
    assert behaviour_cloning(tiny_policy(), dataset, SFTConfig(steps=0), progress=False) == []
