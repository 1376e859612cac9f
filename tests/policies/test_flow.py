"""The flow family: Flow-Noise chains re-score exactly (also from the store), PPO moves them, SFT fits them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from conftest import changed, chunk_extras, make_env, observations, snapshot, tiny_policy

from ript_robot.config import FlowConfig, RIPTConfig, RuntimeConfig, SFTConfig
from ript_robot.data import EpisodeStore
from ript_robot.envs.pick import make_contexts
from ript_robot.rl.ppo import build_batch, ppo_update
from ript_robot.rl.sampling import Group
from ript_robot.rl.sft import behaviour_cloning, chunk_dataset
from ript_robot.runtime.loop import run_episodes
from ript_robot.types import Context, Episode, EpisodeMeta, Label, StepRecord


def flow_policy(steps: int, seed: int = 0, family: str = "flow"):
    return tiny_policy(seed=seed, family=family, flow=FlowConfig(steps=steps))


@pytest.mark.parametrize("family", ["flow", "flow_vlm"])
@pytest.mark.parametrize("steps", [1, 4])
def test_rescoring_a_sampled_chain_gives_the_log_probability_act_reported(steps: int, family: str) -> None:
    policy = flow_policy(steps, family=family)
    obs = observations(4)
    chunks = policy.act(obs)
    chain = chunks[0].extras["chain"]
    assert chain.shape == (steps + 1, policy.chunk_size, 3) and np.allclose(chain[-1], chunks[0].actions)
    policy.train()  # the trainer re-scores in training mode
    rescored = policy.log_prob(
        policy.preprocess(obs), torch.from_numpy(np.stack([c.actions for c in chunks])), chunk_extras(chunks)
    )
    reported = torch.from_numpy(np.stack([c.step_log_prob for c in chunks]))
    torch.testing.assert_close(rescored, reported, atol=1e-5, rtol=0)
    deterministic = policy.act(obs[:1], deterministic=True)[0]
    assert np.all(deterministic.extras["chain"][0] == 0.0)  # the ODE from the prior's mode
    np.testing.assert_allclose(policy.act(obs[:1], deterministic=True)[0].actions, deterministic.actions, atol=1e-6)


def test_a_chain_is_required_and_must_end_in_the_actions() -> None:
    policy = flow_policy(2)
    obs = observations(2)
    chunks = policy.act(obs)
    inputs, actions = policy.preprocess(obs), torch.from_numpy(np.stack([c.actions for c in chunks]))
    with pytest.raises(ValueError, match="chunk_extras/chain"):
        policy.log_prob(inputs, actions)
    with pytest.raises(ValueError, match="chunk_extras/chain"):
        policy.log_prob(inputs, actions, {"chain": chunk_extras(chunks)["chain"][:, :2]})  # another step count
    with pytest.raises(ValueError, match="do not end in these actions"):
        policy.log_prob(inputs, actions + 0.5, chunk_extras(chunks))


def rollouts(policy, tmp_path: Path) -> tuple[EpisodeStore, list]:
    store = EpisodeStore(tmp_path / "store")
    contexts = make_contexts("lab_a", range(2), tasks=("pick up the green block",))
    with store.writer() as writer:
        episodes = run_episodes(
            [make_env(max_steps=10) for _ in range(4)], [contexts[0]] * 2 + [contexts[1]] * 2, policy,
            RuntimeConfig(execute_steps=2), sink=writer,
        )  # fmt: skip
    return store.refresh(), episodes


def test_chains_travel_through_the_store_as_plain_zarr_and_rescore_exactly(tmp_path: Path) -> None:
    policy = flow_policy(3)
    store, episodes = rollouts(policy, tmp_path)
    stored = [store.read_episode(e.meta.episode_id) for e in episodes]
    chain = zarr.open_group(str(tmp_path / "store" / "episodes" / episodes[0].meta.episode_id))["chunk_extras/chain"]
    assert chain.shape == (len(episodes[0].chunks), 4, policy.chunk_size, 3)  # readable without ript-robot
    assert store.verify().ok  # ript store verify decodes the chains like every array
    groups = [Group(stored[0].meta.context, stored[:2]), Group(stored[2].meta.context, stored[2:])]
    for group in groups:  # one success and one failure each: every chunk has an advantage
        group.episodes[0].meta.label, group.episodes[1].meta.label = Label(True, "sim"), Label(False, "sim")
    batch = build_batch(policy, groups)
    out = ppo_update(policy, torch.optim.Adam(policy.parameters(), lr=1e-3), batch, RIPTConfig(ppo_epochs=1))
    assert out["initial_ratio_error"] < 1e-4  # the stored chains give back the log-probs the runtime reported


@pytest.mark.parametrize("family", ["flow", "flow_vlm"])
def test_a_ppo_update_moves_the_chain_density_toward_positive_advantages(tmp_path: Path, family: str) -> None:
    policy = flow_policy(2, seed=1, family=family)
    before_weights = snapshot(policy)
    _, episodes = rollouts(policy, tmp_path)
    for good, bad in ((episodes[0], episodes[1]), (episodes[2], episodes[3])):
        good.meta.label, bad.meta.label = Label(True, "sim"), Label(False, "sim")
    groups = [Group(episodes[0].meta.context, episodes[:2]), Group(episodes[2].meta.context, episodes[2:])]
    batch = build_batch(policy, groups)

    def scores() -> torch.Tensor:
        with torch.no_grad():
            return (policy.log_prob(batch.inputs, batch.actions, batch.extras) * batch.mask).sum(1)

    before = scores()
    ppo_update(policy, torch.optim.Adam(policy.parameters(), lr=1e-3), batch, RIPTConfig(ppo_epochs=4))
    moved = scores() - before
    assert moved[batch.advantages > 0].mean() > 0 > moved[batch.advantages < 0].mean()
    trained = changed(before_weights, policy)
    if family == "flow_vlm":  # only what RIPT trains: the adapters, the heads, the projector, the placeholders
        assert trained and all(not k.startswith("backbone.") or ".lora_" in k for k in trained)
        assert any(".lora_" in k for k in trained) and any(k.startswith("velocity.") for k in trained)


def test_sft_by_flow_matching_fits_a_demonstration() -> None:
    """Demonstrations that always command (0.6, -0.3, -1): after SFT the ODE lands there."""
    policy = flow_policy(4)
    obs = observations(3)
    target = np.array([0.6, -0.3, -1.0], np.float32)
    demos = [
        Episode(
            EpisodeMeta(f"d{i}", Context(f"lab_a/1/{i}", o.instruction, i), 0, "t", 0.0, kind="demonstration"),
            [StepRecord(t, 0.0, replace(o), target, 0) for t in range(12)],
            [],
            [],
        )
        for i, o in enumerate(obs)
    ]
    before = np.abs(policy.act(obs, deterministic=True)[0].actions - target).max()
    behaviour_cloning(
        policy, chunk_dataset(policy, demos), SFTConfig(steps=800, batch_size=32, lr=3e-3), progress=False
    )
    after = np.abs(policy.act(obs, deterministic=True)[0].actions - target).max()
    assert after < 0.1 < before
