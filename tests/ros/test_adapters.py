"""Command adapters against their controllers' contracts: the JTC double accepts every command, limits hold."""

from __future__ import annotations

import math

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from hypothesis import given, settings
from hypothesis import strategies as st
from ript_ros.adapters import CommandAdapter, Gripper, UnsafeCommand
from ript_ros.arm_double import FR3_READY, FRANKA_FR3, TrajectoryFollower
from ript_ros.config import CommandConfig, PolicyNodeConfig
from ript_ros.setup import check_arm, twist_scale

from ript_robot.calibration.models import WorkspaceCalibration
from ript_robot.config import ConfigError

HZ = 30.0
NOW = Time(sec=100)
FR3 = {
    "adapter": "joint_trajectory",
    "action_space": "joint_delta",
    "joints": FRANKA_FR3.names,
    "joint_lower": FRANKA_FR3.lower,
    "joint_upper": FRANKA_FR3.upper,
    "joint_velocity": FRANKA_FR3.velocity,
    "gripper_index": 7,
}
WORKSPACE = WorkspaceCalibration(
    frame="fr3_link0",
    box={"low": [0.2, -0.4, 0.1], "high": [0.8, 0.4, 0.8]},
    state_position=[7, 8, 9],
    action_position=[0, 1, 2],
    metres_per_action=0.005,
)


def fr3(**overrides) -> CommandAdapter:
    return CommandAdapter(CommandConfig(**{**FR3, **overrides}), 8, HZ)


def submit(follower: TrajectoryFollower, msg, now: float) -> str | None:
    points = [(p.positions, p.velocities, p.time_from_start.sec + p.time_from_start.nanosec * 1e-9) for p in msg.points]
    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    return follower.submit(msg.joint_names, points, stamp, now)


def test_joint_deltas_move_a_franka_from_where_it_is_not_toward_a_scalar_bound():
    adapter = fr3()
    q = np.array(FR3_READY)  # joint 4 at -2.36 rad: the old [-1, 1] clip would have driven it to -1
    msg = adapter.to_messages(np.full(8, 0.5, np.float32), q, NOW)["trajectory"]
    target = np.array(msg.points[0].positions)
    assert msg.header.stamp.sec == msg.header.stamp.nanosec == 0  # the controller starts it on receipt
    assert msg.joint_names == FRANKA_FR3.names
    np.testing.assert_allclose(target, q + 0.5 * 0.05, atol=1e-9)
    assert msg.points[0].time_from_start.nanosec == pytest.approx(1e9 / HZ, abs=1)
    assert len(msg.points[0].velocities) == 0  # the JTC refuses a non-zero velocity at the end by default


def test_targets_stay_within_each_joints_limits_and_its_velocity():
    adapter = fr3(action_space="joint_absolute")
    q = np.array(FRANKA_FR3.upper) - 0.01
    target = adapter.targets(np.full((1, 8), 100.0), q)[0]
    np.testing.assert_allclose(target, FRANKA_FR3.upper)  # the joint limit, not a scalar clip
    far = adapter.targets(np.zeros((1, 8)), np.array(FR3_READY))[0]  # absolute 0 is far from joint 4's -2.36
    step = np.abs(far - np.array(FR3_READY))
    assert np.all(step <= np.array(FRANKA_FR3.velocity) / HZ + 1e-9)


@settings(max_examples=200, deadline=None)
@given(
    actions=st.lists(st.lists(st.floats(-50, 50, allow_nan=False), min_size=8, max_size=8), min_size=1, max_size=6),
    start=st.lists(st.floats(0.0, 1.0), min_size=7, max_size=7),
    space=st.sampled_from(["joint_delta", "joint_absolute"]),
    send_chunk=st.booleans(),
)
def test_the_controller_double_accepts_every_command_the_adapter_sends(actions, start, space, send_chunk):
    """Any action, from any joint state within the limits: the JTC never rejects what the adapter publishes."""
    lower, upper = np.array(FRANKA_FR3.lower), np.array(FRANKA_FR3.upper)
    q = lower + np.array(start) * (upper - lower)
    clock = [0.0]
    follower = TrajectoryFollower(FRANKA_FR3, q, clock=lambda: clock[0])
    adapter = fr3(action_space=space, send_chunk=send_chunk)
    for k, action in enumerate(np.array(actions, np.float32)):
        measured = follower.positions(clock[0])
        msg = adapter.to_messages(action, measured, NOW, np.array(actions[k + 1 :], np.float32))["trajectory"]
        assert submit(follower, msg, clock[0]) is None, follower.rejected
        clock[0] += 1.0 / HZ
    hold = adapter.hold(NOW, follower.positions(clock[0]))["trajectory"]
    assert submit(follower, hold, clock[0]) is None  # a hold is one point where the arm is, never empty


def test_the_last_guard_refuses_what_the_arm_must_never_get():
    adapter = fr3()
    with pytest.raises(UnsafeCommand, match=r"needs the arm's joint positions"):
        adapter.to_messages(np.zeros(8, np.float32), None, NOW)
    with pytest.raises(UnsafeCommand, match="non-finite"):
        adapter.to_messages(np.zeros(8, np.float32), np.array([math.nan] * 7), NOW)
    with pytest.raises(UnsafeCommand, match="outside"):
        adapter.check_targets(np.array([FRANKA_FR3.upper]) + 0.1, np.array(FRANKA_FR3.upper))
    with pytest.raises(UnsafeCommand, match="rad/s"):
        adapter.check_targets(np.array([FR3_READY]) + 0.5, np.array(FR3_READY))
    twist = CommandAdapter(CommandConfig(twist_axes=["linear.x", "linear.y", "linear.z"], gripper_index=3), 4, HZ, 0.15)
    with pytest.raises(UnsafeCommand, match=r"linear\.x"):
        twist.to_messages(np.array([2.0, 0, 0, 0], np.float32), None, NOW)
    with pytest.raises(UnsafeCommand, match="nan"):
        twist.to_messages(np.array([math.nan, 0, 0, 0], np.float32), None, NOW)
    assert fr3().hold(NOW, None) == {}  # nothing to hold at yet: nothing sent


def test_the_twist_carries_its_frame_and_scale_and_round_trips():
    config = CommandConfig(twist_axes=["linear.x", "angular.z"], gripper_mode="continuous")
    adapter = CommandAdapter(config, 3, HZ, twist_scale=0.1, frame="fr3_link0")
    command = np.array([0.5, -0.25, 1.0], np.float32)
    messages = adapter.to_messages(command, None, NOW)
    assert messages["twist"].header.frame_id == "fr3_link0" and messages["twist"].header.stamp == NOW
    assert messages["twist"].twist.linear.x == pytest.approx(0.05)
    assert messages["twist"].twist.angular.z == pytest.approx(-0.025)
    np.testing.assert_allclose(adapter.twist_to_action(messages["twist"], 1.0), command, rtol=1e-6)
    hold = adapter.hold(NOW)
    assert set(hold) == {"twist"} and hold["twist"].twist.linear.x == 0.0  # the gripper keeps its last command


def test_the_gripper_does_not_chatter_inside_its_hysteresis_band():
    gripper = Gripper(CommandConfig())
    noisy = 0.3 * np.sin(np.arange(50))  # a sampled policy hovering around 0
    assert {gripper.command(v) for v in noisy} == {-1.0}
    assert gripper.command(0.6) == 1.0
    assert {gripper.command(v) for v in noisy} == {1.0}  # stays closed until clearly told to open
    assert gripper.command(-0.6) == -1.0


def node_config(**command) -> PolicyNodeConfig:
    return PolicyNodeConfig(command={**FR3, **command}, reset={"home_joints": FR3_READY})


def test_settings_that_disagree_are_refused_with_the_parameter_and_the_fix():
    twist = PolicyNodeConfig(command={"twist_scale": 0.5, "twist_axes": ["linear.x", "linear.y", "linear.z"]})
    with pytest.raises(ConfigError, match=r"twist_scale 0.5 .* 0.15 m/s per unit.*Set command.twist_scale to 0"):
        twist_scale(twist, WORKSPACE)
    assert twist_scale(twist.model_copy(update={"command": CommandConfig(twist_scale=0.0)}), WORKSPACE) == 0.15
    with pytest.raises(ConfigError, match="twist_frame 'tool0' differs from the workspace calibration's frame"):
        check_arm(PolicyNodeConfig(command={"twist_frame": "tool0"}, reset={"enabled": False}), WORKSPACE)
    with pytest.raises(ConfigError, match=r"home_position \[0.0, 0.0, 0.0\] is not a point inside the workspace"):
        check_arm(PolicyNodeConfig(reset={"home_position": [0.0, 0.0, 0.0]}), WORKSPACE)
    with pytest.raises(ConfigError, match=r"home_joints puts .*fr3_joint4"):
        check_arm(
            node_config().model_copy(
                update={"reset": node_config().reset.model_copy(update={"home_joints": [0.0] * 7})}
            ),
            None,
        )
    assert check_arm(node_config(), WORKSPACE) == "fr3_link0"
    with pytest.raises(ValueError, match="joint_velocity has 2 values for 7 joints"):
        CommandConfig(**{**FR3, "joint_velocity": [1.0, 1.0]})
    with pytest.raises(ValueError, match="action_space 'ee_delta' does not fit adapter 'joint_trajectory'"):
        CommandConfig(**{**FR3, "action_space": "ee_delta"})
