"""An arm session through doubles of a Franka FR3's controllers: commands, hostile input, stops, resets.

The policy node runs as its own process (as `ros2 run` starts it) with the shipped profiles
(policy_node.yaml + franka_fr3_jtc.yaml) and a policy that takes 300 ms per chunk at 30 Hz. This
process plays the arm (`ript_ros.arm_double`: a JointTrajectoryController that enforces the real
controller's documented rules, in front of LIBERO's Panda in MuJoCo physics, `ript_ros.mujoco_arm`,
or mock hardware with `--hardware mock`), the operator (starts each episode once the
node says the scene is ready) and, in its second phase, a hostile peer publishing generated
messages on every input topic. Figures (benchmarks/results/arm_session.json):
- missed_command_periods: control periods of running episodes in which the node sent no trajectory
  (gaps between the middleware's send stamps, in whole periods beyond the first), and
  missed_command_periods_at_arrival, the same on the controller's middleware receive stamps;
- jtc_rejected: trajectories the controller double refused (any reason);
- start_pose_error_max: largest joint distance from home at the first step of any episode, rad;
- stop_response_p50/p99_ms: software stop called during an episode (the 300 ms policy is planning
  nearly all the time) to the hold (a trajectory to a published joint state) reaching the
  controller's middleware (its receive stamp: the double's own Python scheduling is not counted);
- messages_fuzzed, nonfinite_or_out_of_bounds_commands, node_alive_after_fuzz;
- servo_timeouts: MoveIt Servo double's command timeouts during episodes (twist profile).

    python benchmarks/arm_session.py [--periods 3000] [--fuzz 10000] [--stops 30] [--smoke]
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
os.environ.setdefault("ROS_DOMAIN_ID", "78")
REPO = Path(__file__).parents[1]
sys.path[:0] = [str(REPO / "tests" / "ros"), str(REPO / "tests")]

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from armutil import (  # noqa: E402
    AWAY,
    HZ,
    Fuzzer,
    Operator,
    fr3_jtc_parameters,
    fr3_servo_parameters,
    fuzz_strategy,
    servo_timeouts_while_running,
)
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from ript_ros.arm_double import FR3_READY, FRANKA_FR3, JointTrajectoryControllerDouble, ServoDouble  # noqa: E402
from ript_ros.mujoco_arm import PhysicsArmDouble  # noqa: E402
from rosutil import call, wait_for  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ript_robot.data import EpisodeStore  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
PERIOD = 1.0 / HZ


def node_process(params: dict) -> subprocess.Popen:
    def text(v: object) -> str:
        return (v or "''") if isinstance(v, str) else json.dumps(v)  # an empty string must be quoted for rcl

    args = ["--ros-args"] + [x for k, v in params.items() for x in ("-p", f"{k}:={text(v)}")]
    return subprocess.Popen([sys.executable, "-m", "ript_ros.policy_node", *args])


class Session:
    """The doubles, the operator and a fuzzer spinning in this process; the policy node in its own."""

    def __init__(self, params: dict, arm_node) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.arm = arm_node(self.context)
        self.operator = Operator(self.context, clock=time.time)  # the middleware's stamps are on the system clock
        self.fuzzer = Fuzzer(self.context)
        self.node_figures: dict[str, str] = {}  # the policy node's newest /diagnostics values
        self.operator.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.executors = []
        for n in (self.arm, self.operator, self.fuzzer):  # each its own thread: the arm never queues behind the rest
            executor = SingleThreadedExecutor(context=self.context)
            executor.add_node(n)
            threading.Thread(target=executor.spin, daemon=True).start()
            self.executors.append(executor)
        self.process = node_process(params)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "ript: policy":
                self.node_figures = {kv.key: kv.value for kv in status.values}

    def node(self, key: str) -> float:
        return float(self.node_figures.get(key, "nan"))

    def close(self) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=60)
        for executor in self.executors:
            executor.shutdown()
        self.context.try_shutdown()
        return code


def missed_periods(times: np.ndarray, windows: list) -> int:
    missed = 0
    for start, end in windows:
        inside = times[(times > start + 0.5) & (times < end)]  # from the first chunk on (the arm holds before it)
        gaps = np.diff(inside)
        missed += int(np.sum(np.maximum(np.round(gaps / PERIOD) - 1, 0)))
    return missed


def jtc_phase(args, work: Path) -> dict:
    params = fr3_jtc_parameters(work, policy_delay_s=0.3, plan_ahead_steps=4, max_steps=300, autostart=True)
    params.update(args.param)
    double = PhysicsArmDouble if args.hardware == "mujoco" else JointTrajectoryControllerDouble
    session = Session(params, lambda ctx: double(context=ctx, initial_positions=AWAY))
    arm, operator = session.arm, session.operator
    out: dict = {}
    try:
        with tqdm(total=args.periods, desc="control periods", unit="period") as bar:
            while sum(int((b or arm.now_s()) - a) * HZ for a, b in operator.windows) < args.periods:
                done = sum(int((b or arm.now_s()) - a) * HZ for a, b in operator.windows)
                bar.update(max(0, min(done, args.periods) - bar.n))
                time.sleep(0.2)
        wait_for(lambda: operator.state() == "running", 60, "a running episode")
        windows = [(a, b or time.time()) for a, b in operator.windows]
        trajectories = arm.history()[0]
        out["control_periods"] = int(sum((b - a) * HZ for a, b in windows))
        # on the middleware's clocks, so neither process's Python scheduling blurs the figure: periods the
        # node sent nothing in, and periods nothing reached the controller's middleware in
        out["missed_command_periods"] = missed_periods(np.array([r.sent for r in trajectories]), windows)
        out["missed_command_periods_at_arrival"] = missed_periods(np.array([r.arrived for r in trajectories]), windows)
        # the node's own count: control periods that started more than 1.5 periods after the one before
        for key in ("missed_ticks", "overruns", "tick_p99_ms", "late_chunk_periods", "watchdog_holds", "policy_p99_ms"):
            out[f"node_{key}"] = session.node(key)
        # the stop: called mid-episode, timed to the hold's arrival at the controller
        responses = []
        stop = operator.create_client(SetBool, "policy/software_stop")  # matched once, before any timing
        wait_for(stop.service_is_ready, 10, "the software stop service")
        for _ in tqdm(range(args.stops), desc="software stops", unit="stop"):
            wait_for(lambda: operator.state() == "running", 60, "a running episode")
            time.sleep(0.2 + 0.3 * np.random.default_rng(len(responses)).random())
            called, since = time.time(), arm.now_s() - 0.5
            future = stop.call_async(SetBool.Request(data=True))

            def hold(called: float = called, since: float = since):  # the first trajectory to a published state
                trajectories, published = arm.history()
                states = {tuple(p) for t, p in published if t > since}
                return next((r for r in trajectories if r.arrived > called and r.first in states), None)

            found = wait_for(hold, 5, "the hold")
            responses.append((found.arrived - called) * 1e3)  # the call to the hold reaching the controller
            assert wait_for(future.done, 5, "the stop's answer") and future.result().success
            release = stop.call_async(SetBool.Request(data=False))
            wait_for(release.done, 5, "the release")
        out["stop_response_p50_ms"] = float(np.percentile(responses, 50))
        out["stop_response_p99_ms"] = float(np.percentile(responses, 99))
        out["stop_trials"] = len(responses)
        # hostile input
        total = [0]

        @settings(max_examples=max(1, args.fuzz // 25), database=None, phases=[Phase.generate], deadline=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(st.lists(fuzz_strategy(FRANKA_FR3.names), min_size=25, max_size=25))
        def fuzz(batch):
            session.fuzzer.publish(batch)
            total[0] += len(batch)
            time.sleep(0.01)

        before = arm.rejected
        fuzz()
        time.sleep(1.0)
        out["messages_fuzzed"] = total[0]
        bad = {k: v for k, v in (arm.rejected - before).items()}
        out["nonfinite_or_out_of_bounds_commands"] = sum(bad.values())
        answer = call(operator, Trigger, "policy/stop", Trigger.Request())
        out["node_alive_after_fuzz"] = session.process.poll() is None and bool(answer.message)
        out["jtc_rejected"] = sum(arm.rejected.values())
        out["jtc_rejections"] = dict(arm.rejected)
        out["jtc_accepted"] = arm.accepted
    finally:
        out["node_exit_code"] = session.close()
    store = EpisodeStore(work / "store", create=False)
    store.refresh()
    firsts = [store.read_episode(r.episode_id).steps[0].observation.state[:7] for r in store.records()]
    out["episodes"] = len(firsts)
    out["start_pose_error_max"] = float(max(np.max(np.abs(f - np.asarray(FR3_READY))) for f in firsts))
    out["start_pose_tolerance"] = params["reset.joint_tolerance"]
    return out


def servo_phase(args, work: Path) -> dict:
    params = fr3_servo_parameters(work, policy_delay_s=0.3, plan_ahead_steps=4, max_steps=150, autostart=True)
    params["reset.speed_fraction"] = 0.5
    session = Session(params, lambda ctx: ServoDouble(context=ctx, initial_xyz=[0.45, 0.15, 0.45]))
    arm, operator = session.arm, session.operator
    try:
        episodes = max(1, round(args.servo_periods / params["max_steps"]))
        timeouts = servo_timeouts_while_running(arm, operator, episodes, timeout=60.0 * episodes)
        periods = int(sum(((b or arm.now_s()) - a) * HZ for a, b in operator.windows))
        return {"servo_timeouts": timeouts, "servo_rejected": sum(arm.rejected.values()), "servo_periods": periods}
    finally:
        session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--periods", type=int, default=3000, help="control periods of running episodes to measure")
    parser.add_argument("--fuzz", type=int, default=10_000, help="generated input messages")
    parser.add_argument("--stops", type=int, default=30, help="software stops to time")
    parser.add_argument("--servo-periods", type=int, default=900, help="control periods through the Servo double")
    parser.add_argument(
        "--hardware",
        choices=["mujoco", "mock"],
        default="mujoco",
        help="behind the JTC double: LIBERO's Panda in MuJoCo physics, or mock hardware mirroring the command",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds; writes nothing under results/")
    parser.add_argument(
        "--param",
        type=lambda kv: (kv.split("=", 1)[0], json.loads(kv.split("=", 1)[1])),
        action="append",
        default=[],
        help="KEY=JSON: a policy node parameter for the trajectory phase (e.g. record=false); not saved as the figures",
    )
    args = parser.parse_args()
    args.param = dict(args.param)
    if args.smoke:
        args.periods, args.fuzz, args.stops, args.servo_periods = 150, 100, 2, 60
    sys.setswitchinterval(0.0005)  # the doubles here answer like drivers: hand the GIL over every 0.5 ms
    work = Path(tempfile.mkdtemp(prefix="arm_session_"))
    results = {"policy_delay_ms": 300, "control_hz": HZ, "hardware": args.hardware}
    results.update(jtc_phase(args, work / "jtc"))
    results.update(servo_phase(args, work / "servo"))
    print(json.dumps(results, indent=2))
    if args.param:
        results["parameters"] = args.param
    if not args.smoke and not args.param:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "arm_session.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
