"""The policy node's reports: its figures on /diagnostics (what a lab engineer reads in rqt) and the
~/episode_status the tablet, the sim bridge and the detector follow."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

if TYPE_CHECKING:
    from ript_ros.policy_node import PolicyNode


def loop_stats(node: PolicyNode) -> dict[str, float]:
    """Control periods, misses and overruns, late chunks, latency and policy-time percentiles, counters."""
    out: dict[str, float] = {}
    plan: list[float] = []
    if node.arm is not None:
        out.update(node.arm.cycle.stats())
        out["late_chunk_periods"] = node.arm.runner.late_periods
        out.update({f"safety_{k}": v for k, v in node.arm.safety.counters.as_dict().items()})
        plan = list(node.arm.runner.plan_seconds)
    series = [("latency", list(node.latencies)), ("policy", plan)]
    series += [(f"latency_{kind}", list(values)) for kind, values in node.split_latencies.items()]
    for name, values in series:
        v = np.asarray(values) * 1e3 if values else np.full(1, np.nan)
        out[f"{name}_p50_ms"] = float(np.percentile(v, 50))
        out[f"{name}_p99_ms"] = float(np.percentile(v, 99))
        out[f"{name}_count"] = len(values)
    out.update(node.counters)
    return out


def diagnostics(node: PolicyNode) -> DiagnosticArray:
    """One DiagnosticStatus: ERROR for a recent refused input, WARN while a newer publication cannot be loaded,
    while holding or missing periods, else OK."""
    stats = loop_stats(node)
    status = DiagnosticStatus(name=f"ript: {node.get_name()}", hardware_id=node.cfg.robot_id if node.cfg else "")
    error = node.input_error
    if error is not None and time.monotonic() - error[0] < 5.0:
        status.level, status.message = DiagnosticStatus.ERROR, error[1]
    elif node.arm is not None and node.arm.follower is not None and node.arm.follower.last_error:
        status.level = DiagnosticStatus.WARN
        status.message = f"keeping policy v{node.arm.policy_version}: {node.arm.follower.last_error}"
    elif node._stale_since is not None:
        status.level, status.message = DiagnosticStatus.WARN, "holding the arm: stale input"
    elif stats.get("missed_ticks", 0) or stats.get("overruns", 0):
        status.level, status.message = DiagnosticStatus.WARN, "the control loop missed periods"
    else:
        status.level, status.message = DiagnosticStatus.OK, f"{node.phase}: {node.phases.message}"
    status.values = [KeyValue(key="phase", value=node.phase)] + [
        KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in stats.items()
    ]
    array = DiagnosticArray(status=[status])
    array.header.stamp = node.get_clock().now().to_msg()
    return array


def episode_status(node: PolicyNode, seq: int) -> dict[str, Any]:
    """The JSON of ~/episode_status: phase, message, context, the running episode, the last one."""
    runner = node.arm.runner if node.arm is not None else None
    running = runner is not None and runner.running
    return {
        "seq": seq,
        "state": node.phase,
        "message": node.phases.message,
        "context": None if node.current_context is None else vars(node.current_context),
        "episode_id": runner.controller.metas[0].episode_id if running else None,
        "step": runner.steps if running else 0,
        "control": "person" if running and runner.controller.intervening(0) else "policy",  # who commands the arm
        "interventions": runner.controller.metas[0].interventions if running else 0,
        "policy_version": None if node.arm is None else node.arm.policy_version,
        "software_stop": node.stopped,
        "last_episode": node.last_episode,
    }
