"""The OpenVLA-OFT-style family on a tiny random VLM built and saved locally (nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import acted_batch, assert_same_acts, changed, make_env, observations, snapshot, tiny_policy, tiny_vlm

from ript_robot.config import OftConfig, PolicyConfig, RIPTConfig, SFTConfig
from ript_robot.envs.demos import record_demonstrations
from ript_robot.envs.pick import expert_action, make_contexts
from ript_robot.policies import load_policy
from ript_robot.policies.base import CheckpointError
from ript_robot.policies.oft import OftPolicy
from ript_robot.rl.ppo import ppo_update
from ript_robot.rl.sft import behaviour_cloning, chunk_dataset


def oft_policy(seed: int = 0, **oft) -> OftPolicy:
    return tiny_policy(seed, family="oft", oft=oft)


def test_act_reports_the_laplace_log_prob_that_rescoring_gives():
    policy = oft_policy()
    obs = observations(3)  # three layouts, one instruction each: prompts of different lengths are padded
    chunks = policy.act(obs)
    actions = torch.from_numpy(np.stack([c.actions for c in chunks]))
    assert actions.shape == (3, 4, 3)
    with torch.no_grad():
        rescored = policy.log_prob(policy.preprocess(obs), actions)
        mean, scale = policy.heads(policy.preprocess(obs))
    reported = torch.from_numpy(np.stack([c.step_log_prob for c in chunks]))
    torch.testing.assert_close(reported, rescored, atol=1e-5, rtol=0)
    # Laplace per action dimension; a sample beyond a bound of [-1, 1] is sent as the bound: its tail mass
    density = -torch.log(2 * scale) - (actions - mean).abs() / scale

    def tail(z):  # P(X >= mean + z * scale)
        return torch.where(z >= 0, 0.5 * torch.exp(-z.abs()), 1 - 0.5 * torch.exp(-z.abs()))

    above, below = tail((1 - mean) / scale).log(), tail((mean + 1) / scale).log()
    expected = torch.where(actions >= 1, above, torch.where(actions <= -1, below, density)).sum(-1)
    torch.testing.assert_close(rescored, expected, atol=1e-5, rtol=0)
    assert ((scale >= 0.25) & (scale <= 1.0)).all()
    # the deterministic chunk is the mean of one parallel pass, the same whatever else is in the batch
    alone = policy.act(obs[:1], deterministic=True)[0].actions
    np.testing.assert_allclose(alone, mean[0].numpy(), atol=1e-5)


def test_the_prompts_padding_does_not_change_an_observations_actions():
    policy = oft_policy(seed=1)
    obs = observations(1)[0]
    other = observations(2)[1]
    other.instruction = "pick up the block that is furthest from the robot base on the left side"
    batch_alone = policy.preprocess([obs])
    batch_padded = policy.preprocess([obs, other])
    assert batch_padded["tokens"].shape[1] > batch_alone["tokens"].shape[1]
    with torch.no_grad():
        torch.testing.assert_close(policy.heads(batch_alone)[0][0], policy.heads(batch_padded)[0][0], atol=1e-5, rtol=0)


def test_sft_fits_the_demonstrations_and_ript_trains_only_adapters_and_heads():
    policy = oft_policy()
    env = make_env()
    data = chunk_dataset(policy, record_demonstrations(env, make_contexts("lab_a", range(4)), expert_action))
    backbone = {k for k in policy.state_dict() if k.startswith("backbone.") and ".lora_" not in k}
    before = snapshot(policy)
    with torch.no_grad():
        start_l1 = (policy.heads(data.inputs)[0] - data.actions).abs().mean().item()
    behaviour_cloning(policy, data, SFTConfig(steps=200, batch_size=32, lr=3e-3), progress=False)
    with torch.no_grad():
        end_l1 = (policy.heads(data.inputs)[0] - data.actions).abs().mean().item()
    assert end_l1 < 0.5 * start_l1, (start_l1, end_l1)
    moved = changed(before, policy)
    assert any(".lora_B." in k for k in moved) and "placeholders" in moved and not moved & backbone

    batch = acted_batch(policy, observations(4), [1.0, -1.0, 1.0, -1.0])
    with torch.no_grad():
        old = policy.log_prob(batch.inputs, batch.actions).sum(-1)
    after_sft = snapshot(policy)
    optimizer = torch.optim.Adam(policy.rl_parameters(), lr=1e-3)
    stats = ppo_update(policy, optimizer, batch, RIPTConfig(ppo_epochs=2, minibatch_size=4))
    assert stats["initial_ratio_error"] < 1e-5
    moved = changed(after_sft, policy)
    assert moved and not moved & backbone
    assert not any(k.startswith("backbone.vision_tower.") for k in moved)
    with torch.no_grad():
        new = policy.log_prob(batch.inputs, batch.actions).sum(-1)
    assert (new - old)[[0, 2]].min() > 0 and (new - old)[[1, 3]].max() < 0  # toward the positive advantages


def test_a_checkpoint_holds_the_adapters_and_heads_and_reloads_through_from_pretrained(tmp_path):
    policy = oft_policy(seed=2)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if ".lora_B." in name:
                p.normal_(std=0.1)  # trained-looking adapters (peft starts them at zero)
    policy.version = 3
    policy.save(tmp_path)
    saved = set(policy.checkpoint_state())
    assert saved and all(not k.startswith("backbone.") or ".lora_" in k for k in saved)
    backbone_bytes = sum(f.stat().st_size for f in tiny_vlm().glob("*.safetensors"))
    assert (tmp_path / "model.safetensors").stat().st_size < backbone_bytes
    loaded = load_policy(tmp_path)
    assert isinstance(loaded, OftPolicy) and loaded.version == 3 and loaded.config.oft.backbone == str(tiny_vlm())
    assert_same_acts(policy, loaded, observations(2), atol=1e-5)


def test_bad_backbones_and_configs_get_errors_that_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match=r"needs policy\.oft\.backbone"):
        PolicyConfig(family="oft")
    with pytest.raises(ValueError, match=r"must contain '\{instruction\}'"):
        OftConfig(backbone="x", prompt="no placeholder")
    with pytest.raises(CheckpointError, match="cannot load the oft backbone"):
        oft_policy(backbone=str(tmp_path / "missing"))
    with pytest.raises(CheckpointError, match="names a linear layer of the language model"):
        oft_policy(lora_targets=["nonexistent_proj"])
    with pytest.raises(CheckpointError, match="cannot hold the policy here"):
        oft_policy(device="cuda:99" if torch.cuda.is_available() else "cuda")
    policy = oft_policy()
    policy.save(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="was it saved with another config"):
        oft_policy(lora_rank=8).load_weights(tmp_path / "ck")


def test_bos_comes_first_then_the_patches_then_the_prompt():
    policy = oft_policy()
    assert policy._leading_bos == 1  # the tiny tokenizer starts every text with BOS, as Llama's does
    obs = observations(2)
    batch = policy.preprocess(obs)
    embeds, mask = policy.sequence(batch)
    table = policy.backbone.get_input_embeddings().weight
    patches = policy.vision_size**2 // 64  # 8x8-pixel patches, CLS dropped
    torch.testing.assert_close(embeds[:, 0], table[policy.tokenizer.bos_token_id].expand(2, -1))
    torch.testing.assert_close(embeds[:, 1 + patches], table[batch["tokens"][:, 1]])
    assert embeds.shape[1] == batch["tokens"].shape[1] + patches + 1 + policy.chunk_size
    assert mask.shape == embeds.shape[:2] and mask[:, : 1 + patches].all()


def test_a_bfloat16_backbone_trains_float32_adapters_and_scores_what_it_samples():
    policy = oft_policy(dtype="bfloat16")
    trainable = dict(policy.named_parameters())
    assert all(p.dtype == torch.float32 for p in policy.rl_parameters())
    assert trainable["backbone.language_model.layers.0.mlp.up_proj.base_layer.weight"].dtype == torch.bfloat16
    obs = observations(3)
    batch = acted_batch(policy, obs, [1.0, -1.0, 1.0])
    with torch.no_grad():
        rescored = policy.log_prob(batch.inputs, batch.actions)
    assert torch.isfinite(rescored).all()
    torch.testing.assert_close(rescored, batch.old_log_prob, atol=1e-4, rtol=0)
