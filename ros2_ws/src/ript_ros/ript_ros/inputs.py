"""The arm's inputs, checked where they enter: images, joint states, the end-effector pose.

Every message is validated before anything of it is kept: its stamp (set, and not from the
future beyond `max_clock_skew_s`), its sizes and encoding, finite values, known joint names,
the pose's frame. An invalid message raises `InputError` naming the fix and counts as no
input: the watchdog, which ages every input by its capture stamp (not by its arrival, so a
driver replaying a buffer looks as old as it is), then holds the arm. The state the policy
sees is composed from the JointState (by joint name) and, when configured, the pose.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CompressedImage, Image, JointState

from ript_robot.runtime.timing import Watchdog
from ript_robot.types import Observation
from ript_ros.config import TopicsConfig
from ript_ros.convert import InputError, compressed_to_rgb, image_to_rgb

MAX_SIDE = 8192  # pixels: no camera sends larger frames; a header claiming more is corrupt
MAX_EE_SPEED = 3.0  # m/s: faster than any arm in the robot profiles moves its end effector
JUMP_SLACK = 1.5  # a measurement may move this many times its speed limit (plus 0.01) from the last one


def stamp_seconds(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class ArmInputs:
    """The newest valid value of each input, its capture stamp, and the watchdog over them."""

    def __init__(
        self,
        topics: TopicsConfig,
        image_hw: tuple[int, int],
        command_joints: list[str],
        frame: str,
        max_age_s: float,
        max_skew_s: float,
        clock: Callable[[], float],
        joint_limits: dict[str, tuple[float, float, float]] | None = None,
    ):
        """image_hw: the policy's (height, width); command_joints: joints the trajectory adapter moves;
        frame: the workspace frame a pose must be in ('' accepts any); clock: the ROS clock, seconds;
        joint_limits: (lower, upper, velocity) per joint name, rad and rad/s: a measurement outside the
        limits, or farther from the last one than the velocity allows, is no arm's and is refused."""
        self.topics = topics
        self.image_hw = image_hw
        self.frame = frame
        self.max_skew_s = max_skew_s
        self.clock = clock
        self.joint_names = list(dict.fromkeys([*topics.state_joints, *command_joints]))
        self.command_joints = command_joints
        self.joint_limits = joint_limits or {}
        names = [f"camera/{c}" for c in topics.cameras]
        names += ["joint_states"] if self.joint_names else []
        names += ["ee_pose"] if topics.ee_pose_topic else []
        self.watchdog = Watchdog(names, max_age_s, clock=clock)
        self.images: dict[str, np.ndarray] = {}
        self.stamps: dict[str, float] = {}
        self.joints: dict[str, float] = {}
        self.pose: np.ndarray | None = None
        self.last_error = ""

    # ---- entry checks ---------------------------------------------------------------------------
    def _stamp(self, header: Any, what: str) -> float:
        stamp = stamp_seconds(header.stamp)
        if stamp <= 0:
            raise InputError(f"{what}: header.stamp is zero; the driver must stamp each message with its capture time")
        ahead = stamp - self.clock()
        if ahead > self.max_skew_s:
            raise InputError(
                f"{what}: stamped {ahead:.3f} s in the future: the driver's clock and this machine's disagree "
                "(synchronise them with chrony/PTP, or set use_sim_time on both) or raise max_clock_skew_s"
            )
        return stamp

    def on_image(self, camera: str, msg: Image | CompressedImage) -> None:
        """Keep a camera frame, converted to the policy's size; InputError when unusable."""
        stamp = self._stamp(msg.header, f"camera '{camera}'")
        if isinstance(msg, Image):
            if not (0 < msg.height <= MAX_SIDE and 0 < msg.width <= MAX_SIDE):
                raise InputError(f"camera '{camera}': a {msg.width}x{msg.height} image is not a camera frame")
            image = image_to_rgb(camera, msg, self.image_hw, self.topics.resize_images)
        else:
            try:
                image = compressed_to_rgb(camera, msg, self.image_hw, self.topics.resize_images)
            except InputError:
                raise
            except Exception as exc:  # a decoder's own refusal (a decompression bomb, a truncated stream)
                raise InputError(f"camera '{camera}': cannot decode the compressed image: {exc}") from None
        self.images[camera] = image
        self._fed(f"camera/{camera}", stamp)

    def on_joint_state(self, msg: JointState) -> None:
        """Keep the positions of the joints the state and the adapter use; InputError when missing or not finite."""
        stamp = self._stamp(msg.header, "joint_states")
        names = list(msg.name)
        if len(set(names)) != len(names) or len(msg.position) != len(names):
            raise InputError(
                f"joint_states: {len(names)} names ({len(set(names))} distinct) for {len(msg.position)} positions; "
                "a JointState needs one position per distinct joint name"
            )
        index = {name: i for i, name in enumerate(names)}
        missing = [j for j in self.joint_names if j not in index]
        if missing:
            raise InputError(
                f"joint_states lacks {missing}; the arm publishes {names}: set topics.state_joints and command.joints "
                "to the arm's joint names (see the robot profiles in config/)"
            )
        values = {j: float(msg.position[index[j]]) for j in self.joint_names}
        bad = [j for j, v in values.items() if not math.isfinite(v)]
        if bad:
            raise InputError(f"joint_states: non-finite position of {bad}; check the arm's driver")
        for j, v in values.items():
            if j not in self.joint_limits:
                continue
            lower, upper, velocity = self.joint_limits[j]
            if not lower - 0.05 <= v <= upper + 0.05:
                raise InputError(f"joint_states: {j} at {v:.4g} rad is outside its limits [{lower}, {upper}]")
            if j in self.joints:
                self._plausible(f"joint_states: {j}", abs(v - self.joints[j]), velocity, stamp, "joint_states")
        self.joints = values
        self._fed("joint_states", stamp)

    def on_pose(self, msg: PoseStamped) -> None:
        """Keep the end-effector pose; InputError when not finite, not a rotation or in another frame."""
        stamp = self._stamp(msg.header, "ee_pose")
        if self.frame and msg.header.frame_id != self.frame:
            raise InputError(
                f"ee_pose is in frame '{msg.header.frame_id}' but the workspace calibration is in '{self.frame}': "
                "publish the pose in the calibration's frame, or re-calibrate the workspace in this one"
            )
        p, q = msg.pose.position, msg.pose.orientation
        pose = np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w], dtype=np.float64)
        if not np.isfinite(pose).all() or not 0.9 < float(np.linalg.norm(pose[3:])) < 1.1:
            raise InputError(f"ee_pose {pose.tolist()} is not a finite pose with a unit quaternion")
        if self.pose is not None:
            self._plausible("ee_pose", float(np.linalg.norm(pose[:3] - self.pose[:3])), MAX_EE_SPEED, stamp, "ee_pose")
        self.pose = pose
        self._fed("ee_pose", stamp)

    def _plausible(self, what: str, moved: float, speed: float, stamp: float, name: str) -> None:
        """InputError unless `moved` is reachable at `speed` since the last accepted message of `name`."""
        elapsed = stamp - self.stamps[name]
        if elapsed < 0:
            raise InputError(f"{what}: stamped {-elapsed:.3f} s before the last one; a second publisher on the topic?")
        if moved > speed * elapsed * JUMP_SLACK + 0.01:
            raise InputError(
                f"{what} moved {moved:.3g} in {elapsed:.3f} s, faster than the arm can ({speed} per s): "
                "a second publisher on the topic, or a faulty driver"
            )

    def _fed(self, name: str, stamp: float) -> None:
        self.stamps[name] = stamp
        self.watchdog.feed(name, when=stamp)

    # ---- what the loop reads ------------------------------------------------------------------
    def stale(self) -> dict[str, float]:
        """Inputs older than `max_input_age_s` by their stamps (inf: never received), with their ages."""
        return self.watchdog.stale()

    def state(self) -> np.ndarray | None:
        if len(self.joints) < len(self.joint_names) or (self.topics.ee_pose_topic and self.pose is None):
            return None
        parts = [np.array([self.joints[j] for j in self.topics.state_joints], np.float64)]
        if self.topics.ee_pose_topic:
            parts.append(self.pose)
        return np.concatenate(parts).astype(np.float32)

    def command_positions(self) -> np.ndarray | None:
        """Measured positions of the trajectory adapter's joints, in its order (None before the first)."""
        if not self.command_joints or len(self.joints) < len(self.joint_names):
            return None
        return np.array([self.joints[j] for j in self.command_joints], np.float64)

    def fresh_command_positions(self) -> np.ndarray | None:
        """`command_positions` while the joint states are fresh, else None (an old position is no hold)."""
        return None if "joint_states" in self.stale() else self.command_positions()

    def observation(self, instruction: str) -> Observation | None:
        """The newest observation, or None while any input is stale or missing (the arm must hold)."""
        state = self.state()
        if state is None or self.stale() or len(self.images) < len(self.topics.cameras):
            return None
        images = {c: self.images[c] for c in self.topics.cameras}
        return Observation(images, state, instruction, stamps=dict(self.stamps))
