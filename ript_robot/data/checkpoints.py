"""Policies published in the store: versioned safetensors, a manifest, a latest pointer.

The trainer publishes each new policy as `policies/v<version>/model.safetensors` with a
`manifest.json` (version, family, config, sha256 of the weights, which episodes trained
it) and then moves `policies/latest.json`, the commit point of a training iteration. An
actor's `PolicyFollower` checks the pointer between episodes, verifies the hash before it
loads anything, and never swaps weights while an episode runs: it swaps only when asked,
and the runtime asks only between episodes. Weights are safetensors only: nothing loaded
from a store can run code. The trainer's optimizer state is kept beside them, under
`trainer/`, so a restarted trainer continues with the same Adam moments.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ript_robot.data.backend import Backend
from ript_robot.policies import CheckpointError, Policy, build_policy

LATEST = "policies/latest.json"


def _folder(version: int) -> str:
    return f"policies/v{version:06d}"


def latest_version(backend: Backend) -> int | None:
    """The newest published policy version, None before the first."""
    pointer = backend.get_json(LATEST)
    return None if pointer is None else int(pointer["version"])


def read_manifest(backend: Backend, version: int) -> dict[str, Any]:
    manifest = backend.get_json(f"{_folder(version)}/manifest.json")
    if manifest is None:
        raise CheckpointError(f"{backend.uri} has no policy version {version}")
    return manifest


def published_versions(backend: Backend) -> list[int]:
    return sorted(int(name[1:]) for name in backend.children("policies") if name.startswith("v"))


def publish_policy(
    backend: Backend,
    policy: Policy,
    extra: dict[str, Any] | None = None,
    state: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Write the policy's weights and manifest, then point `latest` at its version.

    state: the checkpoint tensors when the policy cannot give them whole itself (a sharded
    trainer's, gathered by `rl.distributed.full_state`)."""
    state = policy.checkpoint_state() if state is None else state
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    data = save_safetensors(state, metadata={"family": policy.family, "version": str(policy.version)})
    manifest = {
        "version": policy.version,
        "family": policy.family,
        "config": policy.config_dict(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "created": time.time(),
        **(extra or {}),
    }
    folder = _folder(policy.version)
    backend.put(f"{folder}/model.safetensors", data)
    backend.put_json(f"{folder}/manifest.json", manifest)
    backend.put_json(LATEST, {"version": policy.version})
    return manifest


def load_published(backend: Backend, version: int | None = None, reuse: Policy | None = None) -> Policy:
    """Load a published policy (the latest by default) after checking its sha256.

    reuse: a policy of the same family and config is given the new weights in place instead of
    being rebuilt (an oft policy would otherwise load its whole backbone again for every version).
    """
    if version is None:
        version = latest_version(backend)
        if version is None:
            raise CheckpointError(f"{backend.uri} has no published policy yet: start `ript train` first")
    manifest = read_manifest(backend, version)
    source = f"{backend.uri}/{_folder(version)}/model.safetensors"
    data = backend.get(f"{_folder(version)}/model.safetensors")
    if data is None:
        raise CheckpointError(f"{source} is missing")
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["sha256"]:
        raise CheckpointError(
            f"{source} has sha256 {digest[:12]}..., its manifest says {manifest['sha256'][:12]}...: "
            "the weights are damaged or were replaced; not loading them"
        )
    same = reuse is not None and reuse.family == manifest["family"] and reuse.config_dict() == manifest["config"]
    policy = reuse if same else build_policy(manifest, source)
    policy.load_tensors(load_safetensors(data), source)
    policy.version = int(manifest["version"])
    return policy


class PolicyFollower:
    """The actor's view of the published policy; it changes only when `update()` is called."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.policy: Policy | None = None

    @property
    def version(self) -> int | None:
        return None if self.policy is None else self.policy.version

    def update(self) -> bool:
        """Load the latest published policy if it is newer; call it only between episodes (the weights of a
        policy of the same config are replaced in place)."""
        latest = latest_version(self.backend)
        if latest is None or latest == self.version:
            return False
        self.policy = load_published(self.backend, latest, reuse=self.policy)
        return True


def save_optimizer(backend: Backend, version: int, state: dict[int, dict[str, Any]]) -> None:
    """An optimizer's per-parameter state by position (tensors and step counts), as safetensors."""
    tensors = {}
    for index, entries in state.items():
        for key, value in entries.items():
            tensors[f"{index}.{key}"] = torch.as_tensor(value).contiguous()
    backend.put(f"trainer/optimizer/v{version:06d}.safetensors", save_safetensors(tensors))


def read_optimizer(backend: Backend, version: int) -> dict[int, dict[str, torch.Tensor]] | None:
    """What `save_optimizer` wrote for `version`; None when there is nothing to restore."""
    data = backend.get(f"trainer/optimizer/v{version:06d}.safetensors")
    if data is None:
        return None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in load_safetensors(data).items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    return state
