"""Policy families behind the `Policy` contract, built from a config or loaded from a checkpoint."""

from __future__ import annotations

from pathlib import Path

from ript_robot.config import PolicyConfig
from ript_robot.envs.base import EnvSpec
from ript_robot.policies.base import ConfiguredPolicy, Policy, read_policy_meta
from ript_robot.policies.chunked import ChunkedPolicy
from ript_robot.policies.flow import FlowPolicy, FlowVlmPolicy
from ript_robot.policies.oft import OftPolicy
from ript_robot.policies.openvla_oft import OpenVlaOftPolicy
from ript_robot.policies.quest import QuestPolicy
from ript_robot.types import CheckpointError

FAMILIES: dict[str, type[ConfiguredPolicy]] = {
    "chunked": ChunkedPolicy,
    "quest": QuestPolicy,
    "oft": OftPolicy,
    "flow": FlowPolicy,
    "flow_vlm": FlowVlmPolicy,
    "openvla_oft": OpenVlaOftPolicy,
}


def make_policy(config: PolicyConfig, spec: EnvSpec) -> Policy:
    """A freshly initialized policy of `config.family` sized for an env, over its action bounds."""
    shapes = set(spec.cameras.values())
    if len(shapes) != 1:
        raise ValueError(f"the {config.family} policy takes cameras of one size; the env has {spec.cameras}")
    (image_shape,) = shapes
    cameras = sorted(spec.cameras) if len(spec.cameras) > 1 else ()
    bounds = (spec.action_low, spec.action_high)
    return FAMILIES[config.family](config, image_shape, spec.state_dim, spec.action_dim, cameras, bounds)


def build_policy(meta: dict, source: str) -> Policy:
    """An untrained policy of the family and architecture that `meta` (policy.json) describes."""
    family = FAMILIES.get(meta["family"])
    if family is None:
        raise CheckpointError(f"{source}: unknown policy family {meta['family']!r}; known: {sorted(FAMILIES)}")
    policy = family.from_config_dict(meta["config"])
    policy.version = int(meta["version"])
    return policy


def load_policy(directory: str | Path) -> Policy:
    """Rebuild a policy from `policy.json` and load its safetensors weights and version."""
    policy = build_policy(read_policy_meta(directory), str(directory))
    policy.load_weights(directory)
    return policy


__all__ = ["CheckpointError", "Policy", "build_policy", "load_policy", "make_policy"]
