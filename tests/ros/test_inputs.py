"""Inputs checked where they enter: stamps, names, frames, finite values; generated messages never slip through."""

from __future__ import annotations

import math

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from hypothesis import given, settings
from hypothesis import strategies as st
from ript_ros.config import TopicsConfig
from ript_ros.convert import InputError
from ript_ros.inputs import ArmInputs
from sensor_msgs.msg import CompressedImage, Image, JointState

JOINTS = ["j1", "j2", "j3"]
NOW = 1000.0


def arm(clock: list[float], **topics) -> ArmInputs:
    config = TopicsConfig(**{"state_joints": JOINTS[:2], "ee_pose_topic": "ee_pose", **topics})
    return ArmInputs(config, (8, 8), JOINTS, "base", max_age_s=0.1, max_skew_s=0.05, clock=lambda: clock[0])


def stamp(t: float) -> Time:
    sec, nanosec = divmod(round(t * 1e9), 10**9)
    return Time(sec=sec, nanosec=nanosec)


def joints(names, positions, t=NOW) -> JointState:
    msg = JointState(name=list(names), position=[float(p) for p in positions])
    msg.header.stamp = stamp(t)
    return msg


def pose(xyz=(0.3, 0.0, 0.5), quat=(0.0, 0.0, 0.0, 1.0), frame="base", t=NOW) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = stamp(t), frame
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = xyz
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = quat
    return msg


def image(t=NOW, size=8) -> Image:
    msg = Image(height=size, width=size, encoding="rgb8", step=size * 3, data=bytes(size * size * 3))
    msg.header.stamp = stamp(t)
    return msg


def image_of(**fields) -> Image:
    msg = Image(encoding="rgb8", **fields)
    msg.header.stamp = stamp(NOW)
    return msg


def test_state_is_composed_by_joint_name_and_pose_and_aged_by_stamp():
    clock = [NOW]
    inputs = arm(clock)
    inputs.on_joint_state(joints(["j3", "extra", "j2", "j1"], [3.0, 9.0, 2.0, 1.0]))  # any order, extra joints
    inputs.on_pose(pose())
    inputs.on_image("top", image())
    np.testing.assert_allclose(inputs.state(), [1.0, 2.0, 0.3, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(inputs.command_positions(), [1.0, 2.0, 3.0])
    obs = inputs.observation("pick")
    assert obs is not None and obs.stamps == {"camera/top": NOW, "joint_states": NOW, "ee_pose": NOW}
    clock[0] = NOW + 0.2  # a driver replaying old messages: their stamps, not their arrival, say how old
    inputs.on_image("top", image(t=NOW + 0.01))
    assert set(inputs.stale()) == {"camera/top", "joint_states", "ee_pose"}
    assert inputs.observation("pick") is None and inputs.fresh_command_positions() is None


def test_bad_inputs_are_refused_with_the_fix_and_the_last_valid_value_kept():
    clock = [NOW]
    inputs = arm(clock)
    inputs.on_joint_state(joints(JOINTS, [1.0, 2.0, 3.0]))
    cases = [
        (lambda: inputs.on_joint_state(joints(JOINTS, [1.0, math.nan, 3.0])), "non-finite position of \\['j2'\\]"),
        (lambda: inputs.on_joint_state(joints(["j1", "j2"], [1.0, 2.0])), "lacks \\['j3'\\].*state_joints"),
        (lambda: inputs.on_joint_state(joints(["j1", "j1", "j2", "j3"], [1, 1, 2, 3])), "distinct"),
        (lambda: inputs.on_joint_state(joints(JOINTS, [1.0, 2.0])), "one position per distinct"),
        (lambda: inputs.on_joint_state(joints(JOINTS, [1, 2, 3], t=0.0)), "stamp is zero"),
        (lambda: inputs.on_joint_state(joints(JOINTS, [1, 2, 3], t=NOW + 1.0)), "1.000 s in the future.*chrony"),
        (lambda: inputs.on_pose(pose(frame="world")), "frame 'world' but the workspace calibration is in 'base'"),
        (lambda: inputs.on_pose(pose(quat=(0, 0, 0, 0))), "unit quaternion"),
        (lambda: inputs.on_pose(pose(xyz=(math.inf, 0, 0))), "not a finite pose"),
        (lambda: inputs.on_image("top", image_of(height=10**6, width=10**6)), "not a camera frame"),
    ]
    for call, message in cases:
        with pytest.raises(InputError, match=message):
            call()
    np.testing.assert_allclose(inputs.command_positions(), [1.0, 2.0, 3.0])  # untouched by what was refused


names = st.lists(st.sampled_from([*JOINTS, "x", "", "j1 "]), max_size=6)
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
stamps = st.one_of(st.just(NOW), st.floats(0, 2 * NOW), st.just(0.0))
joint_states = st.builds(
    lambda n, p, v, t: (lambda m: (setattr(m, "velocity", v), m)[1])(joints(n, p, t)),
    names,
    st.lists(floats, max_size=6),
    st.lists(floats, max_size=6),
    stamps,
)
poses = st.builds(
    pose,
    st.tuples(floats, floats, floats),
    st.tuples(floats, floats, floats, floats),
    st.sampled_from(["base", ""]),
    stamps,
)
encodings = st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "16UC1", "yuv422", ""])
images = st.builds(
    lambda h, w, e, step, data, t: (lambda m: (setattr(m.header, "stamp", stamp(t)), m)[1])(
        Image(height=h, width=w, encoding=e, step=step, data=data)
    ),
    st.integers(0, 20),
    st.integers(0, 20),
    encodings,
    st.integers(0, 100),
    st.binary(max_size=2000),
    stamps,
)
compressed = st.builds(
    lambda fmt, data: (lambda m: (setattr(m.header, "stamp", stamp(NOW)), m)[1])(
        CompressedImage(format=fmt, data=data)
    ),
    st.sampled_from(["jpeg", "png", ""]),
    st.binary(max_size=200) | st.just(b"\x89PNG\r\n\x1a\n" + bytes(40)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(joint_states, poses, images, compressed), min_size=1, max_size=8))
def test_generated_messages_either_enter_valid_or_are_refused_cleanly(messages):
    clock = [NOW]
    inputs = arm(clock, resize_images=True)
    for msg in messages:
        try:
            if isinstance(msg, JointState):
                inputs.on_joint_state(msg)
            elif isinstance(msg, PoseStamped):
                inputs.on_pose(msg)
            else:
                inputs.on_image("top", msg)
        except InputError:
            pass  # refused with a message: counts as no input
        state = inputs.state()
        assert state is None or np.isfinite(state).all()
        positions = inputs.command_positions()
        assert positions is None or np.isfinite(positions).all()
        assert all(img.shape == (8, 8, 3) and img.dtype == np.uint8 for img in inputs.images.values())
        assert all(t <= NOW + 0.05 for t in inputs.stamps.values())


def test_a_joint_state_no_arm_could_reach_is_refused():
    clock = [NOW]
    config = TopicsConfig(state_joints=JOINTS)
    limits = {j: (-2.0, 2.0, 1.0) for j in JOINTS}  # rad, rad, rad/s
    inputs = ArmInputs(config, (8, 8), JOINTS, "", 0.1, 0.05, lambda: clock[0], limits)
    inputs.on_joint_state(joints(JOINTS, [0.0, 0.0, 0.0], t=NOW - 0.1))
    inputs.on_joint_state(joints(JOINTS, [0.08, 0.0, 0.0], t=NOW - 0.05))  # 1.6 rad/s: within 1.5x + 0.01 rad
    with pytest.raises(InputError, match=r"j1 moved 0.92 in 0.050 s, faster than the arm can"):
        inputs.on_joint_state(joints(JOINTS, [1.0, 0.0, 0.0], t=NOW))
    with pytest.raises(InputError, match="outside its limits"):
        inputs.on_joint_state(joints(JOINTS, [1e300, 0.0, 0.0], t=NOW))
    with pytest.raises(InputError, match="before the last one"):
        inputs.on_joint_state(joints(JOINTS, [0.08, 0.0, 0.0], t=NOW - 0.08))
    np.testing.assert_allclose(inputs.command_positions(), [0.08, 0.0, 0.0])
