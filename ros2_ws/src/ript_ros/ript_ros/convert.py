"""Conversions between ROS 2 messages and the core types, with errors that say what to fix.

Images are converted with numpy (no cv_bridge): `rgb8`, `bgr8`, `rgba8` and `bgra8` raw
images and JPEG/PNG compressed ones become uint8 (H, W, 3) RGB. Anything else, or an image
of the wrong size, raises `InputError` naming the camera, what arrived and what to change
(or, with `resize_images`, is resized by area interpolation, as every other path does).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState

from ript_robot.images import resize_area

CHANNELS = {"rgb8": (3, False), "bgr8": (3, True), "rgba8": (4, False), "bgra8": (4, True)}


class InputError(ValueError):
    """A message the policy cannot use; the message names the input and the fix."""


def _check_size(camera: str, image: np.ndarray, expected_hw: tuple[int, int] | None, resize: bool) -> np.ndarray:
    if expected_hw is None:  # any size will do (the tablet's live view)
        return image
    if image.shape[:2] != tuple(expected_hw) and resize:
        return resize_area(image, expected_hw)
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


def vector_to_joint_state(values: np.ndarray, joints: list[str], stamp: Time) -> JointState:
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(joints)
    msg.position = [float(v) for v in values]
    return msg


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
