"""A damaged publication between episodes: the policy node keeps its weights, says why, and picks up the next."""

from __future__ import annotations

from pathlib import Path

from conftest import tiny_policy
from diagnostic_msgs.msg import DiagnosticStatus
from ript_ros.policy_node import PolicyNode
from ript_ros.sim_bridge_node import SimBridgeNode
from rosutil import ros_context, spinning, wait_for
from test_nodes import Listener, as_overrides, policy_parameters, sim_parameters

from ript_robot.data import EpisodeStore
from ript_robot.data.schedule import Schedule
from ript_robot.envs.pick import make_contexts
from ript_robot.policies.published import publish_policy


def test_a_damaged_publication_never_stops_the_node_and_is_reported_on_diagnostics(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path / "store", create=True)
    publish_policy(store.backend, tiny_policy(seed=3))
    schedule = Schedule(store.backend)
    contexts = make_contexts("workcell", range(2))[:3]
    schedule.write_round(0, contexts, rollouts_per_context=4)

    def versions() -> list[int]:
        return [r.meta.policy_version for r in store.refresh().records()]

    with ros_context() as ctx:
        params = policy_parameters(Path("store"), tmp_path / "store", autostart=True, max_steps=12)
        node = PolicyNode(context=ctx, parameter_overrides=as_overrides(params))
        sim = SimBridgeNode(context=ctx, parameter_overrides=as_overrides(sim_parameters()))
        listener = Listener(ctx)
        node.trigger_configure()
        node.trigger_activate()
        with spinning(ctx, node, sim, listener):
            wait_for(lambda: len(versions()) >= 1, timeout=60, what="a first committed episode")
            damaged = tiny_policy(seed=4)
            damaged.version = 1
            publish_policy(store.backend, damaged)
            weights = tmp_path / "store" / "policies" / "v000001" / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[:-7])  # a partial copy of the new weights
            schedule.write_round(1, contexts, rollouts_per_context=4)
            warning = wait_for(
                lambda: next(
                    (s for s in listener.diagnostics if s.level == DiagnosticStatus.WARN and "v000001" in s.message),
                    None,
                ),
                timeout=60,
                what="a diagnostics warning naming the damaged publication",
            )
            assert "keeping policy v0" in warning.message and "sha256" in warning.message
            done = len(versions())
            wait_for(lambda: len(versions()) >= done + 2, timeout=60, what="episodes after the damaged publication")
            assert set(versions()) == {0}  # between episodes it kept v0's weights and went on
            assert node.counters["callback_errors"] == 0  # nothing was raised into a callback
            good = tiny_policy(seed=5)
            good.version = 2
            publish_policy(store.backend, good)
            schedule.write_round(2, contexts, rollouts_per_context=4)
            wait_for(lambda: 2 in versions(), timeout=60, what="an episode of the next good version")
            assert node.arm is not None and node.arm.follower.last_error is None
            seen = len(listener.diagnostics)
            after = wait_for(lambda: listener.diagnostics[seen:], timeout=5, what="diagnostics once v2 is loaded")
            assert all("keeping policy" not in s.message for s in after)  # the warning is cleared
