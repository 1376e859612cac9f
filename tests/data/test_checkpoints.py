"""Policies published in the store: hash-checked loads, the latest pointer, swaps only when asked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_policy

from ript_robot.data.backend import Backend
from ript_robot.data.checkpoints import (
    PolicyFollower,
    latest_version,
    load_published,
    publish_policy,
    read_optimizer,
    save_optimizer,
)
from ript_robot.policies import CheckpointError
from ript_robot.rl.distributed import load_full_optimizer_state


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_published_policies_load_back_by_version_and_latest(store_uri: str) -> None:
    backend = Backend(store_uri)
    assert latest_version(backend) is None
    first, second = tiny_policy(seed=1), tiny_policy(seed=2)
    second.version = 1
    manifest = publish_policy(backend, first, {"trained_on": []})
    publish_policy(backend, second)
    assert latest_version(backend) == 1 and len(manifest["sha256"]) == 64
    assert same_weights(load_published(backend), second)
    old = load_published(backend, 0)
    assert old.version == 0 and same_weights(old, first)


def test_damaged_or_replaced_weights_are_refused(tmp_path: Path) -> None:
    backend = Backend(tmp_path)
    publish_policy(backend, tiny_policy())
    weights = tmp_path / "policies" / "v000000" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_published(backend)
    with pytest.raises(CheckpointError, match="no published policy"):
        load_published(Backend(tmp_path / "empty"))


def test_the_follower_swaps_weights_only_when_asked(tmp_path: Path) -> None:
    backend = Backend(tmp_path)
    follower = PolicyFollower(backend)
    assert not follower.update() and follower.policy is None
    publish_policy(backend, tiny_policy(seed=1))
    assert follower.update() and follower.version == 0
    running = follower.policy
    newer = tiny_policy(seed=2)
    newer.version = 1
    publish_policy(backend, newer)
    assert follower.policy is running and follower.version == 0  # mid-episode: nothing changes
    assert follower.update() and follower.version == 1 and same_weights(follower.policy, newer)
    assert follower.policy is running  # same config: new weights in place, nothing rebuilt
    assert not follower.update()
    other = tiny_policy(seed=3, hidden_dim=16)  # another architecture: built anew
    other.version = 2
    publish_policy(backend, other)
    assert follower.update() and follower.policy is not running and same_weights(follower.policy, other)


def test_optimizer_state_survives_a_restart(tmp_path: Path) -> None:
    backend = Backend(tmp_path)
    policy = tiny_policy()
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        sum(p.square().sum() for p in policy.parameters()).backward()
        optimizer.step()
    save_optimizer(backend, 3, optimizer.state_dict()["state"])
    restored = torch.optim.Adam(policy.parameters(), lr=1e-3)
    assert read_optimizer(backend, 2) is None
    load_full_optimizer_state(policy, restored, read_optimizer(backend, 3))
    saved, loaded = optimizer.state_dict()["state"], restored.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    for index, state in saved.items():
        assert torch.equal(state["exp_avg_sq"], loaded[index]["exp_avg_sq"])
        assert float(state["step"]) == float(loaded[index]["step"]) == 3
