"""Camera frame in to command out, over DDS on loopback, with the default policy at 30 Hz.

The sim bridge (this process) publishes the built-in task's 64x64 camera and the arm state
at 30 Hz, like a camera driver and an arm driver; the policy node runs as its own process,
exactly as `ros2 run ript_ros policy_node` would, with the main job's policy architecture,
the sim workspace limits and the episode store recording every step. Commands carry the
stamp of the frame they answer, so the bridge measures frame-to-command latency on arrival.
The policy node reports its ticks, overruns (ticks longer than a period) and the time spent
in the policy on /diagnostics; the bridge counts missed ticks: simulation steps of a running
episode that found no new command. The policy is told never to grasp, so episodes run to the 300-step limit
and the ticks are not diluted by resets. The node also reports its latency apart for the periods beside a
re-plan (a chunk adopted, submitted or being planned on the inference thread, which shares the CPU and the
GIL with the control loop) and for the others: the two populations whose tails differ.

    python benchmarks/ros_latency.py [--ticks 10000] [--smoke]

Prints the figures and saves benchmarks/results/ros_latency.json (--smoke: 200 ticks, saves nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", "77")

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from ript_ros.sim_bridge_node import SimBridgeNode
from tqdm import tqdm

from ript_robot.config import PolicyConfig
from ript_robot.policies.chunked import ChunkedPolicy

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).parents[1]
MAX_STEPS = 300


def default_policy(directory: Path) -> Path:
    """The main job's policy architecture (64x64 camera, chunks of 8), told never to close the gripper."""
    torch.manual_seed(0)
    policy = ChunkedPolicy(PolicyConfig(), (64, 64), 3, 3)
    with torch.no_grad():
        policy.mean_head.weight[2::3] = 0.0
        policy.mean_head.bias[2::3] = -5.0  # far below -1: the safety filter clips it at every step
    return policy.save(directory)


class Diagnostics(Node):
    """Keeps the policy node's newest diagnostic values."""

    def __init__(self) -> None:
        super().__init__("benchmark_diagnostics")
        self.values: dict[str, str] = {}
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on, 10)

    def _on(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "ript: policy":
                self.values = {kv.key: kv.value for kv in status.values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ticks", type=int, default=10_000, help="control ticks to measure")
    parser.add_argument("--smoke", action="store_true", help="200 ticks, save nothing (CI)")
    args = parser.parse_args()
    ticks_wanted = 200 if args.smoke else args.ticks
    work = Path(tempfile.mkdtemp(prefix="ros_latency_"))
    checkpoint = default_policy(work / "policy")
    params = {
        "policy": str(checkpoint),
        "store.uri": str(work / "store"),
        "runtime.safety.workspace": str(REPO / "calibration" / "sim_pick_workspace.yaml"),
        "context_source": "instruction",
        "scene": "workcell",
        "max_steps": MAX_STEPS,
        "reset.enabled": "false",  # the sim bridge lays the scene out, arm included
        "autostart": "true",
    }
    cli = ["--ros-args", *[a for k, v in params.items() for a in ("-p", f"{k}:={v}")]]
    node_process = subprocess.Popen([sys.executable, "-m", "ript_ros.policy_node", *cli])

    rclpy.init()
    sim = SimBridgeNode(
        parameter_overrides=[
            Parameter("builtin.max_steps", value=MAX_STEPS),
            Parameter("instruction", value="pick up the red block"),
        ]
    )
    diagnostics = Diagnostics()
    executor = SingleThreadedExecutor()
    executor.add_node(sim)
    executor.add_node(diagnostics)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    started = time.monotonic()
    try:
        with tqdm(total=ticks_wanted, desc="control ticks", unit="tick", disable=args.smoke) as bar:
            while (ticks := int(diagnostics.values.get("ticks", 0))) < ticks_wanted:
                if node_process.poll() is not None:
                    raise SystemExit(f"the policy node exited with code {node_process.returncode}")
                bar.update(ticks - bar.n)
                time.sleep(0.5)
            bar.update(ticks - bar.n)
        node = dict(diagnostics.values)
        bridge = sim.stats()
        latencies = np.asarray(sim.latencies) * 1e3
    finally:
        node_process.send_signal(signal.SIGINT)
        node_process.wait(timeout=30)
        executor.shutdown()  # then join the spin thread and destroy the nodes before the context goes: a thread
        spinner.join(timeout=10)  # still inside rcl when the interpreter exits aborts it (SIGABRT)
        sim.destroy_node()
        diagnostics.destroy_node()
        rclpy.try_shutdown()
    p50, p99 = (float(np.percentile(latencies, q)) for q in (50, 99))
    result = {
        "ticks": int(node["ticks"]),
        # a missed tick: a simulation step of a running episode that found no new command from the policy node
        "missed_ticks": bridge["steps_without_command"],
        # control periods that started more than 1.5 periods after the previous one (the loop itself late)
        "late_periods": int(node["missed_ticks"]),
        "late_chunk_periods": int(node["late_chunk_periods"]),  # periods held because the next chunk was late
        "overruns": int(node["overruns"]),
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
        "latency_max_ms": float(latencies.max()),
        "commands_measured": int(latencies.size),
        "node_latency_p50_ms": float(node["latency_p50_ms"]),  # capture stamp of the observation -> command out
        "node_latency_p99_ms": float(node["latency_p99_ms"]),
        "policy_p50_ms": float(node["policy_p50_ms"]),  # policy.act on the inference thread
        "policy_p99_ms": float(node["policy_p99_ms"]),
        # node latency over the periods beside a re-plan, and over the others (two populations, two tails)
        "p50_replan_ms": float(node["latency_replan_p50_ms"]),
        "p99_replan_ms": float(node["latency_replan_p99_ms"]),
        "p50_other_ms": float(node["latency_other_p50_ms"]),
        "p99_other_ms": float(node["latency_other_p99_ms"]),
        "replan_periods": int(float(node["latency_replan_count"])),
        "other_periods": int(float(node["latency_other_count"])),
        "tick_p99_ms": float(node["tick_p99_ms"]),
        "episodes": int(node["episodes"]),
        "safety_clipped": int(node["safety_clipped"]),
        "frames_published": bridge["frames"],
        "commands_applied": bridge["commands_applied"],
        "control_hz": 30.0,
        "policy": "ChunkedPolicy, main-job defaults (64x64 camera, chunk 8), 1 torch thread",
        "wall_s": time.monotonic() - started,
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
    }
    print(json.dumps(result, indent=2))
    if not args.smoke:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "ros_latency.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
