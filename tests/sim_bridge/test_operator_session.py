"""The trainer with a person labeling: late labels, undo, corrections and discards cost no rollouts and
teach nothing wrong, beside an evaluation actor and demonstrations on the same contexts."""

from __future__ import annotations

from pathlib import Path

from conftest import IMAGE_SIZE, TINY, make_env, tiny_policy

from ript_robot.config import QuickstartConfig, SFTConfig
from ript_robot.data.schedule import Schedule
from ript_robot.data.store import EpisodeStore
from ript_robot.envs.demos import record_demonstrations
from ript_robot.envs.pick import expert_action, make_contexts
from ript_robot.rl.sft import behaviour_cloning, chunk_dataset
from sim_bridge.operator import OperatorConfig
from sim_bridge.operator_session import run_session, session_figures

STALENESS = 1


def test_a_late_undoing_correcting_operator_costs_no_rollouts_and_nothing_else_is_learned(tmp_path: Path) -> None:
    policy = tiny_policy(seed=0, hidden_dim=64, channels=8, keypoints=8)
    demos = record_demonstrations(make_env(), make_contexts("workcell", range(64)), expert_action)
    behaviour_cloning(
        policy, chunk_dataset(policy, demos), SFTConfig(steps=1000, lr=2e-3, batch_size=128), progress=False
    )
    cfg = QuickstartConfig.model_validate({
        "task": {"image_size": IMAGE_SIZE}, "policy": TINY, "runtime": {"execute_steps": TINY["chunk_size"]},
        "ript": {"rollouts_per_context": 4, "groups_per_iteration": 2, "max_sampling_rounds": 4, "ppo_epochs": 1,
                 "minibatch_size": 16},
        "trainer": {"max_staleness": STALENESS, "poll_s": 1.0}, "actor": {"max_envs": 8},
    })  # fmt: skip
    uri = str(tmp_path / "store")
    operator = OperatorConfig(discard_share=0.05, mistap_share=0.2)
    session = run_session(cfg, uri, policy, make_contexts("workcell", range(4)), 3, operator, timeout_s=400)
    assert [h["updated"] for h in session.history][-3:] == [True] * 3 and not session.failures
    log = session.operator.log
    assert session.operator.errors == [] and log["undo"] >= 1 and log["correction"] == 2
    figures = session_figures(uri, STALENESS)
    assert figures["rollouts_counted"] >= 8 and figures["rollouts_used_share"] >= 0.95
    assert figures["labels_used_inside_undo_window"] == 0
    assert figures["non_rollout_episodes_trained"] == 0 < figures["non_rollout_episodes_in_store"]
    assert figures["corrections_reported"] == 2  # both late corrections, each naming the version that used it
    assert figures["clipped_steps_credited"] == 0 < figures["clipped_share"]
    store = EpisodeStore(uri).refresh()
    replaced = {s.replaces for v in range(4) for s in Schedule(store.backend).slots(v)}
    discarded = [r.meta.slot_id for r in store.records() if r.discarded]
    assert set(discarded) <= replaced  # every discarded rollout's slot was scheduled again
