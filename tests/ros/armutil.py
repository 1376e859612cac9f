"""A Franka FR3 session for the tests and `benchmarks/arm_session.py`: the shipped robot profiles, a
workspace in fr3_link0, a tiny policy of the arm's sizes, and an operator who starts each episode.

The arm is `ript_ros.arm_double`: a JointTrajectoryController (or MoveIt Servo) double that enforces
the real controller's documented rules on mock hardware, publishing joint_states, ee_pose and a camera
on the topics the profiles name (remapped to relative names here)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rclpy.node import Node
from ript_ros.arm_double import FR3_READY
from ript_ros.setup import LATCHED
from rosutil import flatten
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ript_robot.config import PolicyConfig
from ript_robot.policies.chunked import ChunkedPolicy

PACKAGE = Path(__file__).parents[2] / "ros2_ws" / "src" / "ript_ros"
HZ = 30.0
# away from home on every joint, within the FR3 limits: homing has work to do
AWAY = [0.3, -0.5, -0.2, -2.0, 0.2, 1.9, 0.5]


def profile(*names: str) -> dict[str, Any]:
    """The parameters of packaged config files, later files overriding earlier ones (as a launch file loads them)."""
    out: dict[str, Any] = {}
    for name in names:
        out.update(flatten(yaml.safe_load((PACKAGE / "config" / name).read_text())["policy"]["ros__parameters"]))
    return out


def arm_policy(directory: Path, state_dim: int, action_dim: int, seed: int = 0) -> Path:
    """A tiny chunked policy (64x64 camera, chunks of 16) of the arm's state and action sizes."""
    torch.manual_seed(seed)
    config = PolicyConfig(hidden_dim=32, channels=4, keypoints=4, chunk_size=16)
    return ChunkedPolicy(config, (64, 64), state_dim, action_dim).save(directory)


def fr3_workspace(path: Path, state_position: list[int], box: tuple[list[float], list[float]] | None = None) -> Path:
    """A workspace calibration in fr3_link0 around the FR3's reachable space in front of it."""
    low, high = box or ([0.05, -0.6, 0.05], [0.85, 0.6, 1.0])
    path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "frame": "fr3_link0",
                "box": {"low": low, "high": high},
                "state_position": state_position,
                "action_position": [0, 1, 2],
                "metres_per_action": 0.005,
                "max_step_m": 0.01,
            }
        )
    )
    return path


def fr3_parameters(tmp: Path, robot_profile: str, state_dim: int, action_dim: int, **extra: Any) -> dict[str, Any]:
    """The policy node on the FR3: policy_node.yaml + `robot_profile`, the topics remapped to the doubles'."""
    return {
        **profile("policy_node.yaml", robot_profile),
        "policy": str(arm_policy(tmp / "policy", state_dim, action_dim)),
        "store.uri": str(tmp / "store"),
        "runtime.safety.workspace": str(fr3_workspace(tmp / "workspace.yaml", [7, 8, 9])),
        "context_source": "instruction",
        "scene": "fr3_bench",
        "max_steps": 60,
        "outcome_grace_s": 0.0,
        "topics.image_topic": "camera/{camera}/image_raw",
        "topics.state_topic": "joint_states",
        "topics.ee_pose_topic": "ee_pose",
        "command.trajectory_topic": "joint_trajectory_controller/joint_trajectory",
        "command.twist_topic": "servo_node/delta_twist_cmds",
        "command.gripper_topic": "gripper/command",
        **extra,
    }


def fr3_jtc_parameters(tmp: Path, **extra: Any) -> dict[str, Any]:
    """Joint deltas through the JTC (franka_fr3_jtc.yaml): 7 joints + the pose in, 7 deltas + the gripper out."""
    return fr3_parameters(tmp, "franka_fr3_jtc.yaml", 14, 8, **extra)


def fr3_servo_parameters(tmp: Path, **extra: Any) -> dict[str, Any]:
    """End-effector deltas through MoveIt Servo (franka_fr3_servo.yaml): xyz + the gripper out."""
    return fr3_parameters(tmp, "franka_fr3_servo.yaml", 14, 4, **extra)


class Operator(Node):
    """The person at the arm: says the instruction, confirms each scene by calling start, watches the status."""

    def __init__(
        self, context: Any, instruction: str = "put the cup on the plate", auto_start: bool = True, clock: Any = None
    ):
        """clock: where `windows` (the [start, end] of each running stretch, end 0 while running) take their times."""
        super().__init__("operator", context=context)
        self.status: list[dict] = []
        self.clock = clock or time.monotonic
        self.windows: list[list[float]] = []
        self.auto_start = auto_start
        self.starts: list[tuple[float, bool, str]] = []  # (time, accepted, message)
        self.create_publisher(String, "instruction", LATCHED).publish(String(data=instruction))
        self.create_subscription(String, "policy/episode_status", self._on_status, LATCHED)
        self.start_client = self.create_client(Trigger, "policy/start")
        self._asking = False

    def _on_status(self, msg: String) -> None:
        self.status.append(json.loads(msg.data))
        running, now = self.status[-1]["state"] == "running", self.clock()
        if running and (not self.windows or self.windows[-1][1]):
            self.windows.append([now, 0.0])
        elif not running and self.windows and not self.windows[-1][1]:
            self.windows[-1][1] = now
        if self.auto_start and self.status[-1]["state"] == "ready" and not self._asking:
            self._asking = True
            self.start_client.call_async(Trigger.Request()).add_done_callback(self._on_started)

    def _on_started(self, future: Any) -> None:
        response = future.result()
        self.starts.append((time.monotonic(), response.success, response.message))
        self._asking = False

    def state(self) -> str:
        return self.status[-1]["state"] if self.status else ""

    def ended(self) -> list[dict]:
        """The episodes that ended so far, as the status reported them."""
        seen: dict[str, dict] = {}
        for s in self.status:
            if s.get("last_episode"):
                seen[s["last_episode"]["episode_id"]] = s["last_episode"]
        return list(seen.values())


def servo_timeouts_while_running(arm: Any, operator: Operator, episodes: int, timeout: float) -> int:
    """Watch a ServoDouble until `episodes` episodes ended; return the command timeouts it counted while one ran."""
    counted, last = 0, arm.timeouts
    deadline = time.monotonic() + timeout
    while len(operator.ended()) < episodes:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(operator.ended())} of {episodes} episodes ended in {timeout} s: {operator.status[-1:]}"
            )
        now = arm.timeouts
        counted += (now - last) * (operator.state() == "running")
        last = now
        time.sleep(0.005)
    return counted


def home_error(positions: np.ndarray) -> float:
    """Largest joint distance from the FR3 profile's home pose, rad."""
    return float(np.max(np.abs(np.asarray(positions) - np.asarray(FR3_READY))))


def fuzz_strategy(joint_names: list[str]) -> Any:
    """Hypothesis strategy of (topic, message-maker) pairs for every input of the policy node: well-formed,
    malformed and hostile values in every field (stamps as offsets from now, set when published)."""
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import PoseStamped
    from hypothesis import strategies as st
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import Bool

    floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
    offsets = st.one_of(st.just(0.0), st.floats(-5.0, 5.0), st.just(None))  # None: a zero stamp

    def stamped(msg: Any, offset: float | None, frame: str = "") -> Any:
        def make(now_ns: int) -> Any:
            ns = 0 if offset is None else max(now_ns + int(offset * 1e9), 0)
            msg.header.stamp = Time(sec=ns // 10**9, nanosec=ns % 10**9)
            msg.header.frame_id = frame or msg.header.frame_id
            return msg

        return make

    joint_state = st.builds(
        lambda names, pos, vel, off: ("joint_states", stamped(JointState(name=names, position=pos, velocity=vel), off)),
        st.lists(st.sampled_from([*joint_names, "fr3_finger_joint1", "", "x"]), max_size=10),
        st.lists(floats, max_size=10),
        st.lists(floats, max_size=3),
        offsets,
    )

    def pose(xyz: tuple, quat: tuple, frame: str, off: float | None) -> tuple[str, Any]:
        msg = PoseStamped()
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = xyz
        o = msg.pose.orientation
        o.x, o.y, o.z, o.w = quat
        return "ee_pose", stamped(msg, off, frame)

    poses = st.builds(
        pose,
        st.tuples(floats, floats, floats) | st.tuples(*[st.floats(0.1, 0.8)] * 3),
        st.tuples(floats, floats, floats, floats) | st.just((1.0, 0.0, 0.0, 0.0)),
        st.sampled_from(["fr3_link0", "world", ""]),
        offsets,
    )
    images = st.builds(
        lambda h, w, enc, step, data, off: (
            "image",
            stamped(Image(height=h, width=w, encoding=enc, step=step, data=data), off),
        ),
        st.integers(0, 80),
        st.integers(0, 80),
        st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "16UC1", "jpeg", ""]),
        st.integers(0, 300),
        st.binary(max_size=20_000),
        offsets,
    )
    compressed = st.builds(
        lambda fmt, data, off: ("compressed", stamped(CompressedImage(format=fmt, data=data), off)),
        st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", ""]),
        st.binary(max_size=500),
        offsets,
    )
    texts = st.builds(lambda t: ("instruction", lambda now_ns: String(data=t)), st.text(max_size=2000))
    outcomes = st.builds(lambda b: ("outcome", lambda now_ns: Bool(data=b)), st.booleans())
    return st.one_of(joint_state, poses, images, compressed, texts, outcomes)


class Fuzzer(Node):
    """Publishes generated messages on the policy node's input topics, as a faulty driver or a hostile peer."""

    def __init__(self, context: Any):
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image, JointState
        from std_msgs.msg import Bool

        super().__init__("fuzzer", context=context)
        sensor = qos_profile_sensor_data
        self.pubs = {
            "joint_states": self.create_publisher(JointState, "joint_states", sensor),
            "ee_pose": self.create_publisher(PoseStamped, "ee_pose", sensor),
            "image": self.create_publisher(Image, "camera/top/image_raw", sensor),
            "compressed": self.create_publisher(CompressedImage, "camera/top/image_raw/compressed", sensor),
            "instruction": self.create_publisher(String, "instruction", LATCHED),
            "outcome": self.create_publisher(Bool, "task_outcome", 10),
        }
        self.sent = 0

    def publish(self, items: list[tuple[str, Any]]) -> None:
        for topic, make in items:
            self.pubs[topic].publish(make(self.get_clock().now().nanoseconds))
            self.sent += 1
