from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import IMAGE_SIZE, TINY, make_env, observations, tiny_policy

from ript_robot.config import PolicyConfig
from ript_robot.envs.base import EnvSpec
from ript_robot.policies import CheckpointError, load_policy, make_policy
from ript_robot.policies.base import CONFIG_FILE, WEIGHTS_FILE
from ript_robot.policies.chunked import ChunkedPolicy
from ript_robot.policies.vision import tokenize
from ript_robot.types import Observation


@pytest.mark.parametrize("distribution", ["gaussian", "laplace"])
def test_act_log_prob_matches_rescoring(distribution):
    policy = tiny_policy(distribution=distribution)
    obs = observations(3)
    torch.manual_seed(5)
    chunks = policy.act(obs)
    assert len(chunks) == 3
    actions = torch.from_numpy(np.stack([c.actions for c in chunks]))
    assert actions.shape == (3, 4, 3)
    with torch.no_grad():
        rescored = policy.log_prob(policy.preprocess(obs), actions)
    reported = torch.from_numpy(np.stack([c.step_log_prob for c in chunks]))
    assert reported.shape == (3, 4)
    torch.testing.assert_close(reported, rescored, atol=1e-4, rtol=0)
    for chunk, row in zip(chunks, reported, strict=True):
        assert chunk.log_prob == pytest.approx(row.sum().item(), abs=1e-4)
    # sampled actions differ from the mean (the policy explores)
    mean = policy.act(obs, deterministic=True)
    assert not np.allclose(chunks[0].actions, mean[0].actions)


@pytest.mark.parametrize("distribution", ["gaussian", "laplace"])
def test_deterministic_act_returns_the_mean(distribution):
    policy = tiny_policy(distribution=distribution)
    obs = observations(2)
    first = policy.act(obs, deterministic=True)
    second = policy.act(obs, deterministic=True)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.step_log_prob, b.step_log_prob)
    with torch.no_grad():
        mean = policy.distribution(policy.preprocess(obs)).mean.numpy()
    np.testing.assert_allclose(np.stack([c.actions for c in first]), mean, atol=1e-6)


def test_act_restores_training_mode_and_stamps_version(policy):
    policy.train()
    policy.version = 3
    chunks = policy.act(observations(1))
    assert policy.training
    assert chunks[0].policy_version == 3
    assert chunks[0].actions.dtype == np.float32


def test_scale_stays_within_configured_bounds():
    policy = tiny_policy(min_std=0.3, max_std=0.6)
    with torch.no_grad():
        scale = policy.distribution(policy.preprocess(observations(3))).stddev
    assert scale.min().item() >= 0.3 - 1e-6
    assert scale.max().item() <= 0.6 + 1e-6


def test_save_then_load_reproduces_actions_and_version(tmp_path):
    policy = tiny_policy(seed=4)
    policy.version = 7
    obs = observations(2)
    expected = policy.act(obs, deterministic=True)
    policy.save(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / WEIGHTS_FILE).is_file()
    meta = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    assert meta["family"] == "chunked"
    assert meta["version"] == 7

    loaded = load_policy(tmp_path / "ckpt")
    assert isinstance(loaded, ChunkedPolicy)
    assert loaded.version == 7
    assert loaded.config == policy.config
    got = loaded.act(obs, deterministic=True)
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a.actions, b.actions)
        assert b.policy_version == 7


@pytest.mark.parametrize(
    ("override", "key"), [({"hidden_dim": 16}, "trunk.0.weight"), ({"chunk_size": 2}, "mean_head")]
)
def test_load_weights_from_other_config_names_key_and_shape(tmp_path, override, key):
    tiny_policy().save(tmp_path)
    other = tiny_policy(**override)
    with pytest.raises(CheckpointError, match="has shape") as info:
        other.load_weights(tmp_path)
    assert key in str(info.value)
    assert "another config" in str(info.value)


def test_load_weights_with_missing_keys(tmp_path):
    from safetensors.torch import save_file

    save_file({"not_a_layer": torch.zeros(2)}, str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match="missing") as info:
        tiny_policy().load_weights(tmp_path)
    assert "not_a_layer" in str(info.value)


def test_corrupt_safetensors_raises_checkpoint_error(tmp_path):
    policy = tiny_policy()
    policy.save(tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"\x00\x01garbage, not safetensors" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        policy.load_weights(tmp_path)
    with pytest.raises(CheckpointError):
        load_policy(tmp_path)


def test_missing_checkpoint_files_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match=CONFIG_FILE):
        load_policy(tmp_path)
    with pytest.raises(CheckpointError, match=WEIGHTS_FILE):
        tiny_policy().load_weights(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_policy(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"family": "transformer", "version": 0, "config": {}}))
    with pytest.raises(CheckpointError, match="unknown policy family"):
        load_policy(tmp_path)


def test_preprocess_rejects_wrong_image_dtype_and_shape(policy):
    obs = observations(1)[0]
    as_float = Observation({"top": obs.images["top"].astype(np.float32)}, obs.state, obs.instruction)
    with pytest.raises(ValueError, match="uint8") as info:
        policy.preprocess([as_float])
    assert "float32" in str(info.value)
    assert "rgb8" in str(info.value)

    too_big = Observation({"top": np.zeros((64, 64, 3), np.uint8)}, obs.state, obs.instruction)
    with pytest.raises(ValueError, match=r"\(32, 32, 3\)") as info:
        policy.preprocess([too_big])
    assert "(64, 64, 3)" in str(info.value)
    assert "resize" in str(info.value)

    two_cameras = Observation({"a": obs.images["top"], "b": obs.images["top"]}, obs.state, obs.instruction)
    with pytest.raises(ValueError, match="one camera"):
        policy.preprocess([two_cameras])

    bad_state = Observation(obs.images, np.zeros(5, np.float32), obs.instruction)
    with pytest.raises(ValueError, match="state must have shape"):
        policy.preprocess([bad_state])


def test_preprocess_keeps_images_uint8_and_pads_tokens(policy):
    obs = observations(1)[0]
    short = Observation(obs.images, obs.state, "grab")
    batch = policy.preprocess([obs, short])
    assert batch["image"].dtype == torch.uint8
    assert batch["image"].shape == (2, 1, IMAGE_SIZE, IMAGE_SIZE, 3)  # (batch, cameras, H, W, RGB)
    assert batch["state"].dtype == torch.float32
    assert batch["tokens"].shape == (2, len(tokenize(obs.instruction)))
    assert batch["tokens"][1, 1:].eq(0).all()


def test_tokenize_is_stable_and_case_insensitive():
    assert tokenize("Pick up the RED block.") == tokenize("pick up the red block")
    assert tokenize("") == [0]
    assert all(0 < t < 1024 for t in tokenize("pick up the red block"))
    assert tokenize("red") != tokenize("blue")


def test_instruction_changes_the_plan(policy):
    obs = observations(1)[0]
    other = Observation(obs.images, obs.state, "pick up the blue block")
    a, b = policy.act([obs, other], deterministic=True)
    assert not np.allclose(a.actions, b.actions)


def test_make_policy_sizes_from_env_spec():
    env = make_env()
    policy = make_policy(PolicyConfig(hidden_dim=32, channels=4, keypoints=4, chunk_size=4), env.spec)
    assert isinstance(policy, ChunkedPolicy)
    assert policy.chunk_size == 4
    assert policy.image_shape == (IMAGE_SIZE, IMAGE_SIZE)
    mixed = EnvSpec(cameras={"a": (32, 32), "b": (64, 64)}, state_dim=3, action_dim=3, control_hz=10, max_steps=5)
    with pytest.raises(ValueError, match="cameras of one size"):
        make_policy(PolicyConfig(), mixed)


def test_bad_dimensions_rejected():
    with pytest.raises(ValueError, match="action_dim"):
        ChunkedPolicy(PolicyConfig(**{"hidden_dim": 32, "channels": 4, "keypoints": 4}), (32, 32), 3, 0)


def test_several_cameras_share_the_encoder_and_each_one_counts():
    """LIBERO's agent view and wrist camera: both are seen, in a fixed order, and both are required."""
    two = ChunkedPolicy(PolicyConfig(**TINY), (IMAGE_SIZE, IMAGE_SIZE), 3, 3, cameras=["agentview", "wrist"])
    rng = np.random.default_rng(0)
    views = {c: rng.integers(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8) for c in ("wrist", "agentview")}
    obs = Observation(views, np.zeros(3, np.float32), "pick up the red block")
    swapped = Observation({"agentview": views["wrist"], "wrist": views["agentview"]}, obs.state, obs.instruction)
    with torch.no_grad():
        mean = two.distribution(two.preprocess([obs])).mean
        assert not torch.allclose(mean, two.distribution(two.preprocess([swapped])).mean)
    with pytest.raises(ValueError, match=r"takes the cameras \['agentview', 'wrist'\], got \['agentview'\]"):
        two.preprocess([Observation({"agentview": views["agentview"]}, obs.state, obs.instruction)])
    spec = EnvSpec({"agentview": (IMAGE_SIZE, IMAGE_SIZE), "wrist": (IMAGE_SIZE, IMAGE_SIZE)}, 3, 3, 20.0, 10)
    assert make_policy(PolicyConfig(**TINY), spec).cameras == ("agentview", "wrist")
