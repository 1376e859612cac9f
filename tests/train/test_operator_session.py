"""The trainer with a person labeling: late labels, undo, corrections and discards cost no rollouts and
teach nothing wrong, beside an evaluation actor and demonstrations on the same contexts."""

from __future__ import annotations

from pathlib import Path

from ript_robot.data.schedule import Schedule
from ript_robot.data.store import EpisodeStore
from ript_robot.envs.pick import make_contexts
from ript_robot.train.operator_session import cloned_policy, run_session, session_config, session_figures
from sim_bridge.operator import OperatorConfig

STALENESS = 1


def test_a_late_undoing_correcting_operator_costs_no_rollouts_and_nothing_else_is_learned(tmp_path: Path) -> None:
    cfg = session_config(STALENESS)
    policy = cloned_policy(cfg)
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
    # clips at the policy's bounds are scored by the mass beyond them; clips by the workspace are never credited
    assert figures["clipped_share"] > figures["limited_share"] and figures["clipped_steps_credited"] == 1.0
    assert figures["limited_steps_credited"] == 0
    store = EpisodeStore(uri).refresh()
    replaced = {s.replaces for v in range(4) for s in Schedule(store.backend).slots(v)}
    discarded = [r.meta.slot_id for r in store.records() if r.discarded]
    assert set(discarded) <= replaced  # every discarded rollout's slot was scheduled again
