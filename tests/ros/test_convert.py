"""Message conversions: image encodings, sizes, compressed frames, joint states and the command adapter."""

from __future__ import annotations

import io

import numpy as np
import pytest
from geometry_msgs.msg import TwistStamped
from PIL import Image as PILImage
from ript_ros.config import CommandConfig
from ript_ros.convert import (
    CommandAdapter,
    InputError,
    compressed_to_rgb,
    image_to_rgb,
    joint_state_to_vector,
    rgb_to_image,
)
from sensor_msgs.msg import CompressedImage, Image, JointState

RNG = np.random.default_rng(0)
PICTURE = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)


def raw(encoding: str, pixels: np.ndarray, pad: int = 0) -> Image:
    rows = np.concatenate([pixels.reshape(pixels.shape[0], -1), np.zeros((pixels.shape[0], pad), np.uint8)], axis=1)
    h, w = pixels.shape[:2]
    return Image(height=h, width=w, encoding=encoding, step=rows.shape[1], data=rows.tobytes())


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_raw_encodings_become_rgb_even_with_padded_rows(encoding):
    pixels = PICTURE[..., ::-1] if encoding.startswith("bgr") else PICTURE
    if encoding.endswith("a8"):
        pixels = np.concatenate([pixels, np.full((6, 5, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_to_rgb("top", raw(encoding, pixels, pad=7), (6, 5)), PICTURE)


def test_round_trip_through_a_published_image():
    msg = rgb_to_image(PICTURE, stamp=Image().header.stamp, frame_id="top")
    np.testing.assert_array_equal(image_to_rgb("top", msg, (6, 5)), PICTURE)


def test_wrong_encoding_size_or_truncated_data_name_the_fix():
    with pytest.raises(InputError, match=r"camera 'wrist' sends encoding '16UC1'.*rgb8"):
        image_to_rgb("wrist", Image(height=6, width=5, encoding="16UC1", step=10, data=bytes(60)), (6, 5))
    with pytest.raises(InputError, match=r"sends 5x6 images but the policy takes 8x8.*resize_images"):
        image_to_rgb("top", raw("rgb8", PICTURE), (8, 8))
    with pytest.raises(InputError, match="needs step"):
        image_to_rgb("top", Image(height=6, width=5, encoding="rgb8", step=15, data=bytes(20)), (6, 5))


def test_resize_takes_the_nearest_pixel_when_asked():
    image = image_to_rgb("top", raw("rgb8", np.repeat(np.repeat(PICTURE, 2, 0), 2, 1)), (6, 5), resize=True)
    np.testing.assert_array_equal(image, PICTURE)


def test_compressed_png_decodes_and_garbage_is_refused():
    buffer = io.BytesIO()
    PILImage.fromarray(PICTURE).save(buffer, format="PNG")
    msg = CompressedImage(format="png", data=buffer.getvalue())
    np.testing.assert_array_equal(compressed_to_rgb("top", msg, (6, 5)), PICTURE)
    with pytest.raises(InputError, match="cannot decode"):
        compressed_to_rgb("top", CompressedImage(format="jpeg", data=b"not an image"), (6, 5))


def test_joint_state_order_and_missing_joints():
    msg = JointState(name=["gripper", "x", "y"], position=[0.5, 0.1, 0.2])
    np.testing.assert_allclose(joint_state_to_vector(msg, ["x", "y", "gripper"]), [0.1, 0.2, 0.5])
    with pytest.raises(InputError, match=r"lacks positions for \['z'\].*state_joints"):
        joint_state_to_vector(msg, ["x", "z"])


def test_twist_adapter_round_trip_and_hold():
    adapter = CommandAdapter(CommandConfig(twist_axes=["linear.x", "angular.z"], twist_scale=0.1), 3, 30.0)
    command = np.array([0.5, -0.25, 1.0], np.float32)
    messages = adapter.to_messages(command, TwistStamped().header.stamp)
    assert messages["twist"].twist.linear.x == pytest.approx(0.05)
    assert messages["twist"].twist.angular.z == pytest.approx(-0.025)
    assert messages["gripper"].data == 1.0
    np.testing.assert_allclose(adapter.twist_to_action(messages["twist"], 1.0), command, rtol=1e-6)
    hold = adapter.hold(TwistStamped().header.stamp, None)
    assert set(hold) == {"twist"} and hold["twist"].twist.linear.x == 0.0  # the gripper keeps its last command


def test_trajectory_adapter_and_mismatched_axes():
    adapter = CommandAdapter(CommandConfig(adapter="joint_trajectory", joints=["a", "b"]), 2, 20.0)
    msg = adapter.to_messages(np.array([0.1, 0.2], np.float32), TwistStamped().header.stamp)["trajectory"]
    assert msg.joint_names == ["a", "b"] and msg.points[0].time_from_start.nanosec == 50_000_000
    with pytest.raises(ValueError, match="cover the 4 action dimensions"):
        CommandAdapter(CommandConfig(), 4, 30.0)
    with pytest.raises(ValueError, match=r"needs command\.joints"):
        CommandConfig(adapter="joint_trajectory")
