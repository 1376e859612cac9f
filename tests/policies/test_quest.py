from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import acted_batch, assert_same_acts, changed, make_env, observations, snapshot, tiny_policy

from ript_robot.config import PolicyConfig, QuestConfig, RIPTConfig, SFTConfig
from ript_robot.envs.demos import record_demonstrations
from ript_robot.envs.pick import expert_action, make_contexts
from ript_robot.policies import load_policy
from ript_robot.policies.quest import FSQ, QuestPolicy
from ript_robot.rl.ppo import ppo_update
from ript_robot.rl.sft import behaviour_cloning, chunk_dataset


def quest_policy(seed: int = 0, **quest) -> QuestPolicy:
    return tiny_policy(seed, family="quest", quest=quest)


@pytest.mark.parametrize("levels", [[8, 6, 5], [2, 3], [7]])
def test_fsq_ids_and_codes_are_one_to_one(levels):
    fsq = FSQ(levels)
    ids = torch.arange(fsq.codebook_size)
    codes = fsq.from_index(ids)
    assert codes.min() >= -1.0 and codes.max() <= 1.0
    torch.testing.assert_close(fsq.to_index(codes), ids)
    # quantizing any latent lands on one of those codes, with a straight-through gradient
    z = (torch.randn(500, len(levels)) * 3).requires_grad_()
    q = fsq.quantize(z)
    torch.testing.assert_close(fsq.from_index(fsq.to_index(q)), q.detach())
    q.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize("top_k, temperature", [(0, 1.0), (3, 1.0), (5, 0.7)])
def test_act_reports_the_log_prob_that_rescoring_gives(top_k, temperature):
    policy = quest_policy(top_k=top_k, temperature=temperature)
    obs = observations(3)
    chunks = policy.act(obs)
    actions = torch.from_numpy(np.stack([c.actions for c in chunks]))
    assert actions.shape == (3, 4, 3)
    with torch.no_grad():
        rescored = policy.log_prob(policy.preprocess(obs), actions)
    reported = torch.from_numpy(np.stack([c.step_log_prob for c in chunks]))
    torch.testing.assert_close(reported, rescored, atol=1e-5, rtol=0)
    # one log-probability per token, on the first action it decodes to
    assert (reported[:, 1::2] == 0).all() and (reported[:, 0::2] < 0).all()


def test_it_scores_exactly_the_top_k_distribution_it_samples_from():
    """Sample 20k chunks of one observation: their frequencies match exp(log_prob), not the full softmax."""
    policy = quest_policy(seed=3, fsq_levels=[3, 2], top_k=3, temperature=1.5)  # 6 tokens, 2 per chunk
    (obs,) = observations(1)
    n = 20_000
    batch = policy.preprocess([obs] * n)
    torch.manual_seed(0)
    with torch.no_grad():
        actions, step_log_prob = policy.sample(batch)
        tokens = policy.tokens_of(actions)
    ids, counts = np.unique((tokens[:, 0] * 6 + tokens[:, 1]).numpy(), return_counts=True)
    assert len(ids) <= 9  # top 3 first tokens x top 3 second tokens
    probability = {}
    for seq, lp in zip((tokens[:, 0] * 6 + tokens[:, 1]).tolist(), step_log_prob.sum(-1).tolist(), strict=True):
        probability[seq] = np.exp(lp)
    expected = np.array([probability[i] for i in ids])
    assert expected.sum() == pytest.approx(1.0, abs=1e-4)  # the whole support was sampled
    np.testing.assert_allclose(counts / n, expected, atol=0.015)
    # the reference code's scoring (the full softmax) gives other numbers for the same chunks
    with torch.no_grad():
        full = policy.prior_logits({k: v[:1] for k, v in batch.items()}, tokens[:1])
    full_lp = (full / 1.5).log_softmax(-1).gather(-1, tokens[:1, :, None]).sum()
    assert abs(full_lp.item() - step_log_prob[0].sum().item()) > 0.05


def test_chunks_it_did_not_decode_are_refused():
    policy = quest_policy()
    obs = observations(2)
    with pytest.raises(ValueError, match="not a chunk this quest policy decoded"):
        policy.log_prob(policy.preprocess(obs), torch.full((2, 4, 3), 0.123))


def demo_dataset(policy: QuestPolicy):
    env = make_env()
    demos = record_demonstrations(env, make_contexts("lab_a", range(6)), expert_action)
    return chunk_dataset(policy, demos)


def test_staged_sft_trains_the_autoencoder_then_the_prior_and_ript_only_the_prior():
    policy = quest_policy()
    data = demo_dataset(policy)
    before = snapshot(policy)
    losses = behaviour_cloning(policy, data, SFTConfig(steps=150, batch_size=32, lr=3e-3), progress=False)
    assert len(losses) == 300
    assert np.mean(losses[140:150]) < 0.5 * np.mean(losses[:10]), "the autoencoder's L1 error should fall"
    assert np.mean(losses[-10:]) < np.mean(losses[150:160]), "the prior's cross entropy should fall"
    assert {k.split(".")[0] for k in changed(before, policy)} >= {"encoder", "decoder", "prior", "conv1"}
    # the autoencoder reproduces demonstration chunks well enough to act with
    with torch.no_grad():
        error = (policy.decode(policy.encode(data.actions)) - data.actions).abs().mean(-1)
        error = ((error * data.mask).sum() / data.mask.sum()).item()  # over recorded actions: padding is no target
    assert error < 0.2

    # a PPO update leaves the autoencoder exactly as SFT left it
    batch = acted_batch(policy, observations(4), [1.0, -1.0, 1.0, -1.0])
    after_sft = snapshot(policy)
    optimizer = torch.optim.Adam(policy.rl_parameters(), lr=1e-3)
    stats = ppo_update(policy, optimizer, batch, RIPTConfig(ppo_epochs=2, minibatch_size=4))
    assert stats["initial_ratio_error"] < 1e-5
    moved = changed(after_sft, policy)
    assert moved and not any(k.startswith(("encoder.", "decoder.")) for k in moved)


def test_save_and_load_keep_family_config_and_samples(tmp_path):
    policy = quest_policy(seed=2, top_k=4)
    policy.version = 5
    policy.save(tmp_path)
    loaded = load_policy(tmp_path)
    assert isinstance(loaded, QuestPolicy) and loaded.version == 5 and loaded.config.quest.top_k == 4
    assert_same_acts(policy, loaded, observations(2), atol=1e-6)


def test_a_config_whose_tokens_do_not_divide_the_chunk_is_refused():
    with pytest.raises(ValueError, match="must divide chunk_size"):
        PolicyConfig(family="quest", chunk_size=6, quest=QuestConfig(actions_per_token=4))


def test_finetuning_a_pretrained_policy_keeps_its_skill_vocabulary():
    policy = quest_policy()
    data = demo_dataset(policy)
    behaviour_cloning(policy, data, SFTConfig(steps=20, batch_size=32, lr=3e-3), progress=False)
    pretrained = snapshot(policy)
    losses = behaviour_cloning(policy, data, SFTConfig(steps=20, batch_size=32, lr=3e-3), progress=False, finetune=True)
    assert len(losses) == 20  # one stage: the prior
    moved = changed(pretrained, policy)
    assert any(k.startswith("prior.") for k in moved)
    assert not any(k.startswith(("encoder.", "decoder.")) for k in moved)  # every token decodes as before
