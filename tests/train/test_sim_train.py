"""`ript sim-train` on LIBERO: expert demonstrations, SFT, the trainer and a LIBERO actor, all through the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ript_robot.cli import main as ript
from ript_robot.data import EpisodeStore
from ript_robot.data.backend import Backend
from ript_robot.data.checkpoints import latest_version
from ript_robot.policies.openvla_oft import OpenVlaOftPolicy
from ript_robot.policies.published import load_published
from ript_robot.policies.tiny_openvla import save_tiny_openvla_oft

TINY = ["policy.hidden_dim=32", "policy.channels=4", "policy.keypoints=4", "torch_threads=1"]


def small_run(tmp_path: Path, heldout: int) -> list[str]:
    """One libero_object task at 32 pixels, 16 steps, one demonstration, `heldout` held-out contexts."""
    return [
        f"store.uri={tmp_path / 'store'}",
        f"trainer.output_dir={tmp_path / 'run'}",
        "libero.suite=libero_object",
        "libero.image_size=32",
        "libero.max_steps=16",
        "libero.train_inits=2",
        f"libero.heldout_inits={heldout}",
        "libero.demos_per_task=1",
    ]


def test_sim_train_fits_expert_demos_publishes_a_policy_and_measures_it_on_held_out_scenes(tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "run"
    overrides = [
        *small_run(tmp_path, heldout=2),
        "sft.steps=30",
        "ript.iterations=0",
        *TINY,
    ]
    assert ript(["sim-train", "--quiet", *overrides]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["suite"] == "libero_object" and summary["heldout_contexts"] == 2
    assert summary["heldout_before"] == summary["heldout_after"] == 0.0  # 16 steps are too few to place anything
    assert latest_version(Backend(str(store))) == 0
    stored = EpisodeStore(store, create=False).refresh()
    (demo,) = stored.records(kind="demonstration")  # the expert's, solved within the suite's own step limit
    assert demo.meta.context.context_id == "libero_object/0/49" and demo.reward == 1.0
    assert (out / "metrics.jsonl").read_text().count('"sft"') == 1


def test_sim_train_runs_a_released_openvla_oft_checkpoint_through_the_trainer_and_a_libero_actor(
    tmp_path: Path,
) -> None:
    """The openvla_oft family on LIBERO: two cameras, the 8-number proprio, 7 actions with OFT's gripper."""
    checkpoint = save_tiny_openvla_oft(tmp_path / "oft", image_size=32, state_dim=8, action_dim=7)
    store, out = tmp_path / "store", tmp_path / "run"
    overrides = [
        *small_run(tmp_path, heldout=1),
        "sft.steps=10",
        "ript.iterations=1",
        "ript.rollouts_per_context=2",
        "ript.groups_per_iteration=2",
        "ript.episode_budget=8",  # a random policy never succeeds: its groups carry no signal, so stop here
        "policy.family=openvla_oft",
        f"policy.oft.backbone={checkpoint}",
        "policy.oft.lora_rank=4",
        "policy.openvla_oft.libero_gripper=true",
        "torch_threads=1",
    ]
    assert ript(["sim-train", "--quiet", *overrides]) == 0
    assert json.loads((out / "summary.json").read_text())["suite"] == "libero_object"
    stored = EpisodeStore(store, create=False).refresh()
    rollouts = stored.records(kind="rollout")
    assert len(rollouts) == 8 and {r.meta.policy_version for r in rollouts} == {0}
    policy = load_published(Backend(str(store)), 0)
    assert isinstance(policy, OpenVlaOftPolicy) and policy.cameras == ("agentview", "wrist")
    episode = stored.read_episode(rollouts[0].episode_id)
    with torch.no_grad():
        rescored = policy.log_prob(
            policy.preprocess(episode.chunk_observations),
            torch.from_numpy(np.stack([c.actions for c in episode.chunks])),
        )
    np.testing.assert_allclose(rescored.numpy(), np.stack([c.step_log_prob for c in episode.chunks]), atol=1e-4)
