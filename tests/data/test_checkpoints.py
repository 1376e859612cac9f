"""Policies published in the store: hash-checked loads, the latest pointer, swaps only when asked."""

from __future__ import annotations

import hashlib
import json
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from conftest import tiny_policy
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ript_robot.data.backend import Backend
from ript_robot.data.checkpoints import LATEST, latest_version
from ript_robot.data.local_s3 import s3_environment
from ript_robot.policies import CheckpointError
from ript_robot.policies.published import PolicyFollower, load_published, publish_policy, read_optimizer, save_optimizer
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


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def publication_damage(draw: st.DrawFn, files: dict[str, bytes]) -> dict[str, bytes | None]:
    """New contents for some of a publication's files (None: deleted)."""
    name = draw(st.sampled_from(sorted(files)))
    old = files[name]
    kind = draw(st.sampled_from(["delete", "truncate", "flip", "random", "json", "field", "tensors"]))
    at = draw(st.integers(0, len(old) - 1))
    if kind == "delete":
        return {name: None}
    if kind == "truncate":
        return {name: old[:at]}
    if kind == "flip":
        return {name: old[:at] + bytes([old[at] ^ (1 << draw(st.integers(0, 7)))]) + old[at + 1 :]}
    if kind == "random":
        return {name: draw(st.binary(max_size=64))}
    if kind == "json" or (kind == "field" and name.endswith("safetensors")):
        return {name: json.dumps(draw(JSON)).encode()}
    if kind == "field":  # one field of the JSON object set to any JSON value
        value = json.loads(old)
        value[draw(st.sampled_from(sorted(value)))] = draw(JSON)
        return {name: json.dumps(value).encode()}
    # weights that parse but do not fit (renamed, reshaped, retyped, non-finite), with a manifest that matches them
    state = load_safetensors(files["v000001/model.safetensors"])
    key = draw(st.sampled_from(sorted(state)))
    change = draw(st.sampled_from(["rename", "reshape", "retype", "nan"]))
    if change == "rename":
        state[key + ".x"] = state.pop(key)
    elif change == "reshape":
        state[key] = torch.zeros(state[key].numel() + 1)
    elif change == "retype":
        dtypes = [torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.uint8, torch.bool]
        state[key] = state[key].to(draw(st.sampled_from([d for d in dtypes if d != state[key].dtype])))
    else:
        state[key] = state[key].float().clone().fill_(float("nan"))
    data = save_safetensors(state)
    manifest = json.loads(files["v000001/manifest.json"])
    manifest["sha256"] = hashlib.sha256(data).hexdigest()
    return {"v000001/model.safetensors": data, "v000001/manifest.json": json.dumps(manifest).encode()}


def test_a_damaged_publication_is_a_checkpoint_error_and_the_follower_keeps_its_policy(tmp_path: Path) -> None:
    backend = Backend(tmp_path)
    running, newer = tiny_policy(seed=1), tiny_policy(seed=2)
    publish_policy(backend, running)
    newer.version = 1
    publish_policy(backend, newer)
    root = tmp_path / "policies"
    names = ["latest.json", "v000001/manifest.json", "v000001/model.safetensors"]
    files = {name: (root / name).read_bytes() for name in names}

    @settings(max_examples=150, deadline=None, database=None)
    @given(damage=publication_damage(files))
    def check(damage: dict[str, bytes | None]) -> None:
        follower = PolicyFollower(backend, retry_s=0.0)
        follower.policy = load_published(backend, 0)
        for name, data in damage.items():
            (root / name).unlink() if data is None else (root / name).write_bytes(data)
        try:
            try:
                loaded = load_published(backend, 1)
                assert same_weights(loaded, newer)  # what loads is exactly what was published
            except CheckpointError as exc:
                assert "v1" in str(exc) and str(tmp_path) in str(exc), exc
            if follower.update():
                assert follower.version == 1 and same_weights(follower.policy, newer)
            else:
                assert follower.version == 0 and same_weights(follower.policy, running)  # kept, whole
                assert follower.last_error is None or str(tmp_path / "policies") in follower.last_error
        finally:
            for name, data in files.items():
                (root / name).write_bytes(data)

    check()


def test_the_follower_retries_a_broken_version_only_after_retry_s_but_takes_a_newer_one_at_once(tmp_path: Path) -> None:
    backend, now = Backend(tmp_path), [0.0]
    publish_policy(backend, tiny_policy(seed=1))
    follower = PolicyFollower(backend, retry_s=10.0, clock=lambda: now[0])
    assert follower.update() and follower.problem == ""
    running = {k: v.clone() for k, v in follower.policy.state_dict().items()}
    broken = tiny_policy(seed=2)
    broken.version = 1
    publish_policy(backend, broken)
    folder = tmp_path / "policies" / "v000001"
    (folder / "model.safetensors").write_bytes(b"not the weights")
    assert not follower.update() and follower.version == 0
    assert follower.problem.startswith("keeping policy v0: policy v1 (") and "sha256" in follower.problem
    (folder / "manifest.json").unlink()  # not looked at again before retry_s
    now[0] = 9.0
    assert not follower.update() and "sha256" in follower.last_error
    now[0] = 10.0
    assert not follower.update() and f"({folder / 'manifest.json'}) is missing" in follower.last_error
    assert all(torch.equal(running[k], v) for k, v in follower.policy.state_dict().items())
    good = tiny_policy(seed=3)
    good.version = 2
    publish_policy(backend, good)
    assert follower.update() and follower.version == 2 and follower.last_error is None
    assert same_weights(follower.policy, good)
    backend.put(LATEST, b"{not json")
    assert not follower.update() and follower.version == 2 and "latest.json" in follower.last_error
    backend.put_json(LATEST, {"version": 2})  # the pointer mended: nothing is wrong any more
    assert not follower.update() and follower.last_error is None


def test_a_store_that_cannot_be_reached_is_a_checkpoint_error_naming_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nothing listens on: every request is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in s3_environment(f"http://127.0.0.1:{port}").items():
        monkeypatch.setenv(key, value)
    quick = timedelta(milliseconds=10)
    retry = {"max_retries": 0, "retry_timeout": quick, "backoff": {"init_backoff": quick, "max_backoff": quick}}
    backend = Backend("s3://bucket/store", {"retry_config": retry})
    with pytest.raises(CheckpointError, match="policy v3's manifest") as error:
        load_published(backend, 3)
    assert "s3://bucket/store/policies/v000003/manifest.json" in str(error.value) and "Debug" not in str(error.value)
    follower = PolicyFollower(backend)
    follower.policy = tiny_policy()
    assert not follower.update() and follower.version == 0
    assert "(s3://bucket/store/policies/latest.json) cannot be read" in follower.problem
