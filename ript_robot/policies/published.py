"""Published policies as models: publish a policy's weights, load a version, follow the latest.

`data.checkpoints` keeps the bytes (weights, manifest, pointer, sha256); this module turns a
policy into them and back. An actor's `PolicyFollower` checks the pointer between episodes,
verifies the hash before it loads anything, and never swaps weights while an episode runs: it
swaps only when asked, and the runtime asks only between episodes. Weights are safetensors
only: nothing loaded from a store can run code. The trainer's optimizer state is kept beside
them, under `trainer/`, so a restarted trainer continues with the same Adam moments.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ript_robot.data.backend import Backend
from ript_robot.data.checkpoints import latest_version, publish_weights, read_weights, why
from ript_robot.policies import CheckpointError, Policy, build_policy

log = logging.getLogger(__name__)


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
    manifest = {"family": policy.family, "config": policy.config_dict(), **(extra or {})}
    return publish_weights(backend, policy.version, data, manifest)


def load_published(backend: Backend, version: int | None = None, reuse: Policy | None = None) -> Policy:
    """Load a published policy (the latest by default) after checking its sha256.

    reuse: a policy of the same family and config is given the new weights in place instead of
    being rebuilt (an oft policy would otherwise load its whole backbone again for every version);
    its weights change only once the new ones have been read, hashed, parsed and checked.
    Any failure is a CheckpointError naming the version and the file."""
    manifest, data, source = read_weights(backend, version)
    try:
        tensors = load_safetensors(data)
    except Exception as exc:  # the hash matched a manifest written for bytes that are not safetensors
        raise CheckpointError(f"{source} is not a safetensors file: {why(exc)}") from exc
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{source} holds non-finite weights ({', '.join(sorted(bad)[:3])}); not loading them")
    same = reuse is not None and reuse.family == manifest["family"] and reuse.config_dict() == manifest["config"]
    if same:
        policy = reuse
    else:
        try:
            policy = build_policy(manifest, source)
        except CheckpointError:
            raise
        except Exception as exc:  # a config the family cannot build
            raise CheckpointError(f"{source}: its manifest's config cannot be built: {why(exc)}") from exc
    policy.load_tensors(tensors, source)  # checks names, shapes and dtypes before it changes a weight
    policy.version = manifest["version"]
    return policy


class PolicyFollower:
    """The actor's view of the published policy; it changes only when `update()` is called.

    A publication that cannot be loaded never stops an actor: `update()` keeps the current policy,
    says why in `last_error` (logged once per failure) and tries that version again only after
    `retry_s` seconds, while a newer version is tried at once."""

    def __init__(self, backend: Backend, retry_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.backend = backend
        self.policy: Policy | None = None
        self.last_error: str | None = None
        self.retry_s, self.clock = retry_s, clock
        self._failed: tuple[int | None, float] | None = None  # (version, when) of the last failure

    @property
    def version(self) -> int | None:
        return None if self.policy is None else self.policy.version

    @property
    def problem(self) -> str:
        """'' unless the latest publication failed to load; else what the actor runs meanwhile, and why."""
        if self.last_error is None:
            return ""
        kept = "no policy loaded yet, waiting for one" if self.policy is None else f"keeping policy v{self.version}"
        return f"{kept}: {self.last_error}"

    def update(self) -> bool:
        """Load the latest published policy if it is newer; True when the policy changed. Call it only
        between episodes (the weights of a policy of the same config are replaced in place)."""
        latest = None
        try:
            latest = latest_version(self.backend)
            if latest is None or latest == self.version:  # nothing to load, so nothing wrong any more
                self.last_error, self._failed = None, None
                return False
            if self._failed is not None and self._failed[0] == latest and self.clock() - self._failed[1] < self.retry_s:
                return False
            self.policy = load_published(self.backend, latest, reuse=self.policy)
        except CheckpointError as exc:
            repeated = str(exc) == self.last_error
            self.last_error, self._failed = str(exc), (latest, self.clock())
            if not repeated:
                log.warning("%s", self.problem)
            return False
        self.last_error, self._failed = None, None
        return True


def save_optimizer(backend: Backend, version: int, state: dict[int, dict[str, Any]]) -> None:
    """An optimizer's per-parameter state by position (tensors and step counts), as safetensors."""
    tensors = {}
    for index, entries in state.items():
        for key, value in entries.items():
            tensors[f"{index}.{key}"] = torch.as_tensor(value).detach().contiguous().cpu()
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
