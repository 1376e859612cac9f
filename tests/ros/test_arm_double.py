"""The arm doubles: each documented JTC / Servo / Franka rule on a virtual clock, FK, a property test, one DDS run."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from ript_ros.arm_double import (
    FR3_READY,
    FRANKA_FR3,
    JointTrajectoryControllerDouble,
    ServoFollower,
    TrajectoryFollower,
    fr3_end_effector,
    quaternion_xyzw,
    synthetic_image,
)
from rosutil import ros_context, spinning, wait_for
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

try:
    from hypothesis import event, given, settings
    from hypothesis import strategies as st
except ImportError:  # not in the dev extra yet: only the property test is skipped
    given = None

NAMES = FRANKA_FR3.names
LOWER, UPPER = np.array(FRANKA_FR3.lower), np.array(FRANKA_FR3.upper)
VMAX = np.array(FRANKA_FR3.velocity)
READY = np.array(FR3_READY)
T0 = 100.0


class Clock:
    """A virtual clock: the test moves `t`."""

    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def follower(clock: Clock | None = None) -> TrajectoryFollower:
    return TrajectoryFollower(FRANKA_FR3, FR3_READY, clock or Clock())


def moved(**deltas: float) -> list[float]:
    """FR3_READY with some joints moved, by index: moved(j1=0.2)."""
    q = READY.copy()
    for key, delta in deltas.items():
        q[int(key[1:]) - 1] += delta
    return list(q)


# --- forward kinematics ------------------------------------------------------------------------------------------


def test_fk_at_ready_matches_franka_numbers():
    xyz, quat = fr3_end_effector(FR3_READY)
    np.testing.assert_allclose(xyz, [0.30689, 0.0, 0.59028], atol=1e-5)  # the flange
    hand_xyz, hand_quat = fr3_end_effector(FR3_READY, hand=True)
    np.testing.assert_allclose(hand_xyz, [0.30689, 0.0, 0.48688], atol=1e-5)  # the hand's TCP: 0.1034 m lower
    np.testing.assert_allclose(np.abs(hand_quat), [1, 0, 0, 0], atol=1e-9)  # pointing straight down
    np.testing.assert_allclose(np.linalg.norm(quat), 1.0)
    np.testing.assert_allclose(fr3_end_effector([0.0] * 7)[0], [0.088, 0.0, 0.926], atol=1e-12)


def _rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = (f(a) for a in (roll, pitch, yaw) for f in (math.cos, math.sin))
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def test_fk_agrees_with_the_urdf_joint_origins():
    """The DH chain against the FR3 URDF's joint origins (xyz, rpy; every axis z), at random configurations."""
    origins = [
        ((0, 0, 0.333), (0, 0, 0)),
        ((0, 0, 0), (-math.pi / 2, 0, 0)),
        ((0, -0.316, 0), (math.pi / 2, 0, 0)),
        ((0.0825, 0, 0), (math.pi / 2, 0, 0)),
        ((-0.0825, 0.384, 0), (-math.pi / 2, 0, 0)),
        ((0, 0, 0), (math.pi / 2, 0, 0)),
        ((0.088, 0, 0), (math.pi / 2, 0, 0)),
    ]
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = rng.uniform(LOWER, UPPER)
        t = np.eye(4)
        for (xyz, rpy), angle in zip(origins, q, strict=True):
            joint = np.eye(4)
            joint[:3, :3], joint[:3, 3] = _rpy(*rpy) @ _rpy(0, 0, angle), xyz
            t = t @ joint
        flange = t @ np.array([0, 0, 0.107, 1.0])
        xyz, quat = fr3_end_effector(q)
        np.testing.assert_allclose(xyz, flange[:3], atol=1e-12)
        assert abs(abs(np.dot(quat, quaternion_xyzw(t[:3, :3]))) - 1) < 1e-9


def test_quaternion_of_a_half_turn():
    np.testing.assert_allclose(np.abs(quaternion_xyzw(np.diag([1.0, -1.0, -1.0]))), [1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(quaternion_xyzw(_rpy(0, 0, math.pi / 2)), [0, 0, math.sqrt(0.5), math.sqrt(0.5)])


def test_franka_limits_hold_the_ready_pose():
    assert [f"fr3_joint{i}" for i in range(1, 8)] == NAMES
    assert np.all(LOWER < READY) and np.all(READY < UPPER)


# --- JointTrajectoryController rules -----------------------------------------------------------------------------


def test_zero_stamp_starts_at_receipt_and_interpolates_linearly():
    clock = Clock()
    arm = follower(clock)
    target = moved(j1=0.5, j4=0.3)
    assert arm.submit(NAMES, [(target, [], 1.0)], 0.0, T0) is None
    np.testing.assert_allclose(arm.positions(T0), READY)
    np.testing.assert_allclose(arm.positions(T0 + 0.5), (READY + np.array(target)) / 2)  # halfway is halfway
    np.testing.assert_allclose(arm.velocities(T0 + 0.5), np.array(target) - READY)
    np.testing.assert_allclose(arm.positions(T0 + 1.0), target)
    np.testing.assert_allclose(arm.positions(T0 + 50), target)  # the last point is held
    np.testing.assert_allclose(arm.velocities(T0 + 50), 0.0)
    clock.t = T0 + 0.25
    np.testing.assert_allclose(arm.positions(), READY + 0.25 * (np.array(target) - READY))  # the clock's now
    assert arm.accepted == 1 and not arm.rejected


def test_future_stamp_waits_for_its_start():
    arm = follower()
    target = moved(j2=0.2)
    assert arm.submit(NAMES, [(target, [], 1.0)], T0 + 2.0, T0) is None
    np.testing.assert_allclose(arm.positions(T0 + 1.9), READY)
    np.testing.assert_allclose(arm.positions(T0 + 2.5), (READY + np.array(target)) / 2)


def test_trajectory_ending_in_the_past_is_rejected_and_past_points_skipped():
    arm = follower()
    assert arm.submit(NAMES, [(moved(j1=0.1), [], 1.0)], T0 - 1.5, T0) == "ends in the past"
    assert arm.rejected == {"ends in the past": 1}
    # started 1 s ago: the first point (due 0.5 s ago) is skipped, the second is reached from here in 0.5 s
    assert arm.submit(NAMES, [(moved(j1=0.9), [], 0.5), (moved(j1=0.2), [], 1.5)], T0 - 1.0, T0) is None
    np.testing.assert_allclose(arm.positions(T0 + 0.25), moved(j1=0.1))
    np.testing.assert_allclose(arm.positions(T0 + 0.5), moved(j1=0.2))


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        ([*NAMES[:6], "fr3_finger_joint1"], "unknown joint"),
        (NAMES[:6], "missing joints"),  # allow_partial_joints_goal is false by default
        ([*NAMES[:6], NAMES[0]], "duplicate joint"),
        ([], "no joint names"),
    ],
)
def test_joint_names_must_be_exactly_the_controllers(names, reason):
    arm = follower()
    assert arm.submit(names, [(list(READY[: len(names)]), [], 1.0)], 0.0, T0) == reason
    assert arm.rejected == {reason: 1} and arm.accepted == 0
    np.testing.assert_allclose(arm.positions(T0 + 2), READY)


def test_reordered_names_are_mapped_by_name():
    arm = follower()
    target = moved(j1=0.3, j7=-0.4)
    assert arm.submit(NAMES[::-1], [(target[::-1], [], 1.0)], 0.0, T0) is None
    np.testing.assert_allclose(arm.positions(T0 + 1), target)


@pytest.mark.parametrize("times", [[0.5, 0.5], [0.5, 0.4], [1.0, 2.0, 1.5]])
def test_time_from_start_must_strictly_increase(times):
    arm = follower()
    assert arm.submit(NAMES, [(FR3_READY, [], t) for t in times], 0.0, T0) == "time_from_start not increasing"


@pytest.mark.parametrize(
    ("point", "reason"),
    [
        ((FR3_READY[:6], [], 1.0), "positions size"),
        ((FR3_READY, [0.0] * 6, 1.0), "velocities size"),
        ((FR3_READY, [], 1.0, [0.0] * 3), "accelerations size"),
        ((FR3_READY, [], 1.0, [], [1.0] * 7), "effort not supported"),
        ((FR3_READY, [0.1] * 7, 1.0), "nonzero final velocity"),
        ((moved(j4=2.3), [], 1.0), "outside joint limits"),  # joint 4's upper limit is -0.1518
        ((moved(j6=-1.1), [], 5.0), "outside joint limits"),  # joint 6's lower limit is 0.5445
        ((moved(j3=math.nan), [], 1.0), "non-finite value"),
        ((FR3_READY, [], math.inf), "non-finite value"),
        ((FR3_READY, [], -0.5), "negative time"),
    ],
)
def test_malformed_points_are_rejected(point, reason):
    arm = follower()
    assert arm.submit(NAMES, [point], 0.0, T0) == reason
    np.testing.assert_allclose(arm.positions(T0 + 10), READY)


def test_non_finite_stamp_and_empty_trajectory_are_rejected():
    arm = follower()
    assert arm.submit(NAMES, [(FR3_READY, [], 1.0)], math.nan, T0) == "non-finite value"
    assert arm.submit(NAMES, [], 0.0, T0) == "empty trajectory"
    assert arm.rejected == {"non-finite value": 1, "empty trajectory": 1}


def test_velocity_limit_applies_from_the_current_state_and_between_points():
    arm = follower()
    at_limit = moved(j1=VMAX[0] * 0.1)  # exactly dq_max over 0.1 s: allowed
    assert arm.submit(NAMES, [(at_limit, [], 0.1)], 0.0, T0) is None
    over = moved(j5=VMAX[4] * 0.1 * 1.01)
    assert arm.submit(NAMES, [(over, [], 0.1)], 0.0, T0 + 1) == "over velocity limit"
    # slow to the first point, then too fast to the second
    second = moved(j1=VMAX[0] * 0.1, j2=0.3)
    assert arm.submit(NAMES, [(at_limit, [], 0.5), (second, [], 0.6)], 0.0, T0 + 1) == "over velocity limit"
    assert arm.submit(NAMES, [(FR3_READY, [], 0.0)], 0.0, T0 + 1) == "over velocity limit"  # a jump at time 0
    fast = [0.0, 0.0, 0.0, 0.0, 6.0, 0.0, 0.0]  # a given velocity over joint 5's 5.26 rad/s
    assert arm.submit(NAMES, [(at_limit, fast, 1.0), (at_limit, [0.0] * 7, 2.0)], 0.0, T0 + 1) == "over velocity limit"
    assert arm.rejected == {"over velocity limit": 4} and arm.accepted == 1
    np.testing.assert_allclose(arm.positions(T0 + 5), at_limit)


def test_new_trajectory_replaces_the_active_one_from_its_start():
    arm = follower()
    first, second = moved(j1=1.0), moved(j2=-0.5)
    assert arm.submit(NAMES, [(first, [], 2.0)], 0.0, T0) is None
    assert arm.submit(NAMES, [(second, [], 1.0)], 0.0, T0 + 1.0) is None  # halfway through the first
    halfway = (READY + np.array(first)) / 2
    np.testing.assert_allclose(arm.positions(T0 + 1.0), halfway)
    np.testing.assert_allclose(arm.positions(T0 + 1.5), (halfway + np.array(second)) / 2)
    np.testing.assert_allclose(arm.positions(T0 + 3.0), second)
    # stamped 0.5 s ahead: the active trajectory goes on until then
    third = moved(j3=0.4)
    assert arm.submit(NAMES, [(third, [], 1.0)], T0 + 3.5, T0 + 3.0) is None
    np.testing.assert_allclose(arm.positions(T0 + 3.4), second)
    np.testing.assert_allclose(arm.positions(T0 + 4.5), third)


def test_empty_or_rejected_trajectory_leaves_the_motion_alone():
    """The JTC rejects an empty trajectory (PR #902): the arm goes on with the active one, it does not stop."""
    arm = follower()
    target = moved(j1=1.0)
    assert arm.submit(NAMES, [(target, [], 2.0)], 0.0, T0) is None
    assert arm.submit(NAMES, [], 0.0, T0 + 1.0) == "empty trajectory"
    assert arm.submit(NAMES, [(moved(j4=2.3), [], 9.0)], 0.0, T0 + 1.0) == "outside joint limits"
    np.testing.assert_allclose(arm.positions(T0 + 2.0), target)


def test_initial_positions_must_be_within_the_limits():
    with pytest.raises(ValueError, match="within the limits"):
        TrajectoryFollower(FRANKA_FR3, moved(j4=2.3), Clock())


# --- Servo rules -------------------------------------------------------------------------------------------------


def servo(clock: Clock) -> ServoFollower:
    return ServoFollower("fr3_link0", 0.25, 0.1, clock=clock, initial_xyz=(0.3, 0.0, 0.5))


def test_servo_checks_frame_values_speed_and_stamp():
    clock = Clock()
    s = servo(clock)
    cases = [
        ("", (0.1, 0, 0), (0, 0, 0), T0, "empty frame_id"),
        ("fr3_hand_tcp", (0.1, 0, 0), (0, 0, 0), T0, "wrong frame"),
        ("fr3_link0", (math.nan, 0, 0), (0, 0, 0), T0, "non-finite value"),
        ("fr3_link0", (0, 0, 0), (0, math.inf, 0), T0, "non-finite value"),
        ("fr3_link0", (0.2, 0.2, 0), (0, 0, 0), T0, "over linear speed"),
        ("fr3_link0", (0, 0, 0), (0, 0, 1.0), T0, "over angular speed"),
        ("fr3_link0", (0.1, 0, 0), (0, 0, 0), 0.0, "stale stamp"),  # Servo measures age from header.stamp
        ("fr3_link0", (0.1, 0, 0), (0, 0, 0), T0 - 0.15, "stale stamp"),
        ("fr3_link0", (0.1, 0, 0), (0, 0, 0), T0 + 1.0, "stamp in the future"),
    ]
    for frame, lin, ang, stamp, reason in cases:
        assert s.submit(frame, lin, ang, stamp, T0) == reason, reason
    assert s.submit("fr3_link0", (0.25, 0, 0), (0, 0, 0.5), T0 - 0.05, T0) is None
    assert s.accepted == 1 and sum(s.rejected.values()) == len(cases)


def test_servo_integrates_while_fresh_and_counts_one_timeout_per_gap():
    clock = Clock(0.0)
    s = servo(clock)
    assert s.advance(1.0)[0] == 0.3 and s.timeouts == 0  # not engaged yet: no timeout
    assert s.submit("fr3_link0", (0.1, 0, 0), (0, 0, 0), 1.0, 1.0) is None
    np.testing.assert_allclose(s.advance(1.05), [0.305, 0, 0.5])
    np.testing.assert_allclose(s.advance(2.0), [0.31, 0, 0.5])  # halted when the command went stale, at 1.1
    assert s.timeouts == 1
    s.advance(3.0)
    assert s.timeouts == 1  # one gap, one timeout
    assert s.submit("fr3_link0", (0, 0.1, 0), (0, 0, 0), 3.0, 3.0) is None
    assert s.submit("fr3_link0", (0, 0.1, 0), (0, 0, 0), 3.05, 3.05) is None  # refreshed in time
    np.testing.assert_allclose(s.advance(3.1), [0.31, 0.01, 0.5])
    s.advance(4.0)
    assert s.timeouts == 2


def test_servo_disengaged_stops_without_timeouts_and_rejection_halts():
    clock = Clock(0.0)
    s = servo(clock)
    assert s.submit("fr3_link0", (0.1, 0, 0), (0, 0, 0), 0.0, 0.0) is None
    clock.t = 0.05
    s.disengage()
    np.testing.assert_allclose(s.advance(1.0), [0.305, 0, 0.5])
    assert s.timeouts == 0
    assert s.submit("fr3_link0", (0.1, 0, 0), (0, 0, 0), 1.0, 1.0) is None  # engaged again
    assert s.submit("", (0.1, 0, 0), (0, 0, 0), 1.02, 1.02) == "empty frame_id"  # invalid: Servo stops
    np.testing.assert_allclose(s.advance(1.05), [0.307, 0, 0.5])
    assert s.timeouts == 0


def test_synthetic_image_follows_the_end_effector():
    a, b = synthetic_image((0.3, 0.0, 0.5)), synthetic_image((0.5, 0.2, 0.5))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8

    def red(img: np.ndarray) -> np.ndarray:
        return np.argwhere(img[..., 0] == 220).mean(axis=0)

    assert np.all(red(b) > red(a) + 5)  # further out in x (rows) and y (columns)


# --- property: nothing a sender does makes the commanded state non-finite, out of limits or too fast -------------

if given is not None:
    anything = st.one_of(
        st.sampled_from([math.nan, math.inf, -math.inf]), st.floats(allow_nan=True, allow_infinity=True)
    )
    KINDS = ["none", "names", "size", "position", "time", "velocity", "stamp", "empty"]

    @settings(max_examples=300, deadline=None)
    @given(st.data())
    def test_no_trajectory_breaks_the_limits(data):
        """Plausible trajectories (all names in any order, positions within the limits, times increasing) with at
        most one thing broken: names, a size, a position, a time, velocities or the stamp, to any float."""
        clock = Clock()
        arm = follower(clock)
        for _ in range(data.draw(st.integers(1, 6))):
            kind = data.draw(st.sampled_from(KINDS))
            names = data.draw(st.permutations(NAMES))
            if kind == "names":
                names = data.draw(st.lists(st.sampled_from([*NAMES, "bogus"]), max_size=8))
            index = [NAMES.index(n) if n in NAMES else 0 for n in names]
            points, t = [], 0.0
            for _ in range(0 if kind == "empty" else data.draw(st.integers(1, 4))):
                f = np.array(data.draw(st.lists(st.floats(0, 1), min_size=len(names), max_size=len(names))))
                t += data.draw(st.floats(0.5, 4))
                points.append([list(LOWER[index] + (UPPER - LOWER)[index] * f), [0.0] * len(names), t])
            if points and names and kind in ("size", "position", "time", "velocity"):
                point = data.draw(st.sampled_from(points))
                j = data.draw(st.integers(0, len(names) - 1))
                if kind == "size":
                    point[data.draw(st.integers(0, 1))].append(0.0)
                elif kind == "position":
                    point[0][j] = data.draw(st.one_of(anything, st.floats(-5, 5)))
                elif kind == "time":
                    point[2] = data.draw(st.one_of(anything, st.floats(-1, t)))
                else:
                    point[1][j] = data.draw(st.one_of(anything, st.floats(-10, 10)))
            stamp = data.draw(st.one_of(anything, st.floats(clock.t - 5, clock.t + 5))) if kind == "stamp" else 0.0
            arm.submit(names, [tuple(p) for p in points], stamp, clock.t)
            for dt in (0.0, 0.01, 0.3, 2.0, 1e3):
                q, v = arm.positions(clock.t + dt), arm.velocities(clock.t + dt)
                assert np.all(np.isfinite(q)) and np.all(q >= LOWER) and np.all(q <= UPPER)
                assert np.all(np.abs(v) <= VMAX * (1 + 1e-6))
            clock.t += data.draw(st.floats(0, 3))
        event(f"accepted some: {arm.accepted > 0}")
        for reason in arm.rejected:
            event(reason)

else:

    @pytest.mark.skip(reason="hypothesis is not installed")
    def test_no_trajectory_breaks_the_limits():
        pass


# --- over DDS ----------------------------------------------------------------------------------------------------


def test_controller_double_moves_the_arm_over_dds():
    with ros_context() as context:
        arm = JointTrajectoryControllerDouble(context=context, camera_rate_hz=30.0, image_size=(32, 24))
        test = Node("arm_double_test", context=context)
        states: list[JointState] = []
        images: list[Image] = []
        test.create_subscription(JointState, "joint_states", states.append, qos_profile_sensor_data)
        test.create_subscription(Image, "camera/top/image_raw", images.append, qos_profile_sensor_data)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pub = test.create_publisher(JointTrajectory, "joint_trajectory_controller/joint_trajectory", reliable)

        def latest() -> np.ndarray:
            msg = states[-1]
            return np.array([msg.position[list(msg.name).index(n)] for n in NAMES])

        with spinning(context, arm, test):
            wait_for(lambda: states and images and pub.get_subscription_count(), what="the double's topics")
            np.testing.assert_allclose(latest(), READY)
            target = moved(j1=0.3, j7=-0.2)
            point = JointTrajectoryPoint(positions=target[::-1])
            point.time_from_start.nanosec = 500_000_000
            pub.publish(JointTrajectory(joint_names=NAMES[::-1], points=[point]))  # stamp 0: start now
            wait_for(lambda: np.allclose(latest(), target, atol=1e-9), what="the arm at the target")
            bad = JointTrajectory(joint_names=NAMES, points=[JointTrajectoryPoint(positions=moved(j4=2.3))])
            bad.points[0].time_from_start.sec = 1
            bad.header.stamp = test.get_clock().now().to_msg()
            pub.publish(bad)
            wait_for(lambda: arm.received == 2, what="the rejected trajectory")
            assert arm.accepted == 1 and arm.rejected == {"outside joint limits": 1}
            trajectories, commands = arm.history()
            assert [r.outcome for r in trajectories] == ["accepted", "outside joint limits"]
            times, q = np.array([c[0] for c in commands]), np.array([c[1] for c in commands])
            speeds = np.abs(np.diff(q, axis=0)) / np.diff(times)[:, None]
            assert np.all(speeds <= VMAX * (1 + 1e-6)) and speeds[:, 0].max() > 0.3  # 0.6 rad/s on joint 1
            assert images[-1].encoding == "rgb8" and (images[-1].width, images[-1].height) == (32, 24)
            np.testing.assert_allclose(latest(), target, atol=1e-9)
