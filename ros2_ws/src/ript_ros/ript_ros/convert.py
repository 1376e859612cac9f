"""Conversions between ROS 2 messages and the core types, with errors that say what to fix.

Images are converted with numpy (no cv_bridge): `rgb8`, `bgr8`, `rgba8` and `bgra8` raw
images and JPEG/PNG compressed ones become uint8 (H, W, 3) RGB. Anything else, or an image
of the wrong size, raises `InputError` naming the camera, what arrived and what to change.
The command adapter turns one safety-filtered action into the messages an arm driver
takes, and back (the sim bridge is such a driver).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ript_ros.config import CommandConfig

CHANNELS = {"rgb8": (3, False), "bgr8": (3, True), "rgba8": (4, False), "bgra8": (4, True)}


class InputError(ValueError):
    """A message the policy cannot use; the message names the input and the fix."""


def resize_nearest(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, C) image to `hw` by taking the nearest source pixel (fast; no new colours)."""
    rows = (np.arange(hw[0]) * image.shape[0] // hw[0]).astype(np.intp)
    cols = (np.arange(hw[1]) * image.shape[1] // hw[1]).astype(np.intp)
    return np.ascontiguousarray(image[rows[:, None], cols[None, :]])


def _check_size(camera: str, image: np.ndarray, expected_hw: tuple[int, int] | None, resize: bool) -> np.ndarray:
    if expected_hw is None:  # any size will do (the tablet's live view)
        return image
    if image.shape[:2] != tuple(expected_hw) and resize:
        return resize_nearest(image, expected_hw)
    if image.shape[:2] != tuple(expected_hw):
        h, w = image.shape[:2]
        raise InputError(
            f"camera '{camera}' sends {w}x{h} images but the policy takes {expected_hw[1]}x{expected_hw[0]}: "
            "set the camera driver's resolution to match, or the parameter topics.resize_images to true"
        )
    return image


def image_to_rgb(camera: str, msg: Image, expected_hw: tuple[int, int] | None, resize: bool = False) -> np.ndarray:
    """A raw sensor_msgs/Image as uint8 (H, W, 3) RGB; InputError on an unusable encoding or size."""
    if msg.encoding not in CHANNELS:
        raise InputError(
            f"camera '{camera}' sends encoding '{msg.encoding}'; the policy node takes {sorted(CHANNELS)}: "
            "set the camera driver to rgb8 (or bgr8)"
        )
    channels, bgr = CHANNELS[msg.encoding]
    if msg.step < msg.width * channels or len(msg.data) < msg.height * msg.step:
        raise InputError(
            f"camera '{camera}': a {msg.width}x{msg.height} {msg.encoding} image needs step >= "
            f"{msg.width * channels} and {msg.height * msg.step} bytes, got step {msg.step} and {len(msg.data)} bytes"
        )
    rows = np.frombuffer(msg.data, dtype=np.uint8, count=msg.height * msg.step).reshape(msg.height, msg.step)
    image = rows[:, : msg.width * channels].reshape(msg.height, msg.width, channels)[..., :3]
    if bgr:
        image = image[..., ::-1]
    return _check_size(camera, np.ascontiguousarray(image), expected_hw, resize)


def compressed_to_rgb(
    camera: str, msg: CompressedImage, expected_hw: tuple[int, int] | None, resize: bool = False
) -> np.ndarray:
    """A JPEG or PNG sensor_msgs/CompressedImage as uint8 (H, W, 3) RGB."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(io.BytesIO(bytes(msg.data))) as decoded:
            image = np.asarray(decoded.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(
            f"camera '{camera}': cannot decode the compressed image (format '{msg.format}'): {exc}"
        ) from None
    return _check_size(camera, image, expected_hw, resize)


def rgb_to_image(image: np.ndarray, stamp: Time, frame_id: str) -> Image:
    """uint8 (H, W, 3) RGB as a raw rgb8 sensor_msgs/Image."""
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = image.shape[:2]
    msg.encoding = "rgb8"
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    return msg


def joint_state_to_vector(msg: JointState, joints: list[str]) -> np.ndarray:
    """Positions of `joints`, in that order, as float32; InputError when one is missing."""
    index = {name: i for i, name in enumerate(msg.name)}
    missing = [j for j in joints if j not in index]
    if missing or len(msg.position) < len(msg.name):
        raise InputError(
            f"joint_states lacks positions for {missing or joints}; it names {list(msg.name)}: "
            "set topics.state_joints to the arm's joint names"
        )
    return np.array([msg.position[index[j]] for j in joints], dtype=np.float32)


def pose_to_vector(msg: PoseStamped) -> np.ndarray:
    """End-effector pose as float32 (x, y, z, qx, qy, qz, qw)."""
    p, q = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w], dtype=np.float32)


def vector_to_joint_state(values: np.ndarray, joints: list[str], stamp: Time) -> JointState:
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(joints)
    msg.position = [float(v) for v in values]
    return msg


class CommandAdapter:
    """One action <-> the messages of the configured adapter (twist + gripper, or a trajectory point)."""

    def __init__(self, config: CommandConfig, action_dim: int, control_hz: float):
        """action_dim: length of one action; control_hz: rate the commands come at (Hz)."""
        self.config = config
        self.action_dim = action_dim
        self.period_s = 1.0 / control_hz
        if config.adapter == "twist":
            used = len(config.twist_axes) + (config.gripper_index >= 0)
            if config.gripper_index >= action_dim or used != action_dim:
                raise ValueError(
                    f"command.twist_axes {config.twist_axes} and gripper_index {config.gripper_index} must cover "
                    f"the {action_dim} action dimensions exactly"
                )
        elif len(config.joints) != action_dim:
            raise ValueError(f"command.joints names {len(config.joints)} joints for a {action_dim}-dim action")

    def _twist_dims(self) -> list[int]:
        return [i for i in range(self.action_dim) if i != self.config.gripper_index]

    def to_messages(self, command: np.ndarray, stamp: Time) -> dict[str, object]:
        """Messages by topic kind ('twist', 'gripper', 'trajectory') for one command."""
        c = self.config
        if c.adapter == "joint_trajectory":
            point = JointTrajectoryPoint(positions=[float(v) for v in command])
            point.time_from_start.nanosec = int(self.period_s * 1e9)
            msg = JointTrajectory(joint_names=list(c.joints), points=[point])
            msg.header.stamp = stamp
            return {"trajectory": msg}
        twist = TwistStamped()
        twist.header.stamp = stamp
        for axis, dim in zip(c.twist_axes, self._twist_dims(), strict=True):
            group, field = axis.split(".")
            setattr(getattr(twist.twist, group), field, float(command[dim]) * c.twist_scale)
        out: dict[str, object] = {"twist": twist}
        if c.gripper_index >= 0:
            out["gripper"] = Float64(data=float(command[c.gripper_index]))
        return out

    def hold(self, stamp: Time, positions: np.ndarray | None) -> dict[str, object]:
        """Messages that hold the arm where it is: zero twist (gripper unchanged), or the current joint positions."""
        if self.config.adapter == "joint_trajectory":
            if positions is None:
                return {}
            return self.to_messages(positions, stamp)
        twist = TwistStamped()
        twist.header.stamp = stamp
        return {"twist": twist}

    def twist_to_action(self, twist: TwistStamped, gripper: float) -> np.ndarray:
        """The action a twist (and the last gripper command) stands for: what a simulated arm applies."""
        action = np.zeros(self.action_dim, dtype=np.float32)
        for axis, dim in zip(self.config.twist_axes, self._twist_dims(), strict=True):
            group, field = axis.split(".")
            action[dim] = getattr(getattr(twist.twist, group), field) / self.config.twist_scale
        if self.config.gripper_index >= 0:
            action[self.config.gripper_index] = gripper
        return action


def subscribe_camera(node: Any, topic: str, transport: str, callback: Callable[[Any], None]) -> Any:
    """Subscribe `node` to a camera's raw `topic`, or to `<topic>/compressed` with transport 'compressed'."""
    if transport == "compressed":
        return node.create_subscription(CompressedImage, f"{topic}/compressed", callback, qos_profile_sensor_data)
    return node.create_subscription(Image, topic, callback, qos_profile_sensor_data)


def any_image_to_rgb(camera: str, msg: Image | CompressedImage) -> np.ndarray:
    """A raw or compressed image as uint8 (H, W, 3) RGB at its own size; InputError when unusable."""
    if isinstance(msg, CompressedImage):
        return compressed_to_rgb(camera, msg, None)
    return image_to_rgb(camera, msg, None)
