"""Topic-level test doubles of a ros2_control JointTrajectoryController (JTC) on a mock FR3 and of MoveIt Servo.

They hold commands to the real components' documented rules, and to Franka's where those are stricter, so that a
node they accept would be accepted by the real stack. Sources: ros2_controllers joint_trajectory_controller
(doc/userdoc.rst, doc/trajectory.rst, src/joint_trajectory_controller.cpp, src/trajectory.cpp, the parameters yaml);
moveit2 moveit_servo (src/servo_node.cpp, src/servo.cpp, src/utils/command.cpp, common.cpp, servo_parameters.yaml);
Franka's robot specifications (limits, DH parameters) and franka_description robots/fr3/joint_limits.yaml.

JTC rules (`TrajectoryFollower`; the same on the kilted branch and master; most in `validate_trajectory_msg`):
- header.stamp 0 starts the trajectory now (trajectory.rst, Trajectory Replacement; trajectory.cpp `sample`).
- A non-zero stamp starts it then; one ending (stamp + last time_from_start) before now is rejected. Points
  already in the past are skipped (trajectory.rst: "discard those with times in the past").
- allow_partial_joints_goal defaults to false: exactly the controller's joints (userdoc.rst, Commands), none
  unknown; any order, mapped by name (`sort_to_local_joint_order`).
- An empty points list is rejected and the current motion goes on ("Empty trajectory received.", PR #902;
  userdoc.rst's older line that an empty message "overrides" the goal predates that check).
- time_from_start strictly increasing; every point's positions sized like joint_names; velocities and
  accelerations empty or that size; no effort without an effort command interface.
- allow_nonzero_velocity_at_trajectory_end defaults to false: the last point's velocities must be 0 (float eps).
- A new trajectory replaces the active one from its start time (trajectory.rst, Trajectory Replacement: the old
  one runs until then, and the arm goes from where it is then to the new points).
- Interpolation: the default "splines" is linear between positions-only points, cubic with velocities, quintic
  with accelerations (trajectory.rst); this double is always linear. For positions-only messages that is the real
  behaviour; with velocities, a segment's peak speed is at least its mean speed whatever the interpolant, so the
  linear speed check is a necessary condition (a cubic's overshoot is not modelled).
- The mock hardware mirrors the command into the state, as mock_components/GenericSystem does.
Stricter than the JTC, after Franka's necessary joint-space conditions (the arm aborts otherwise): positions in
[q_min, q_max] at every point; the implied speed (from the state at the start time to the first point, then point
to point) and any given velocity at most dq_max x (1 + 1e-6); nothing non-finite (the JTC does not check); no
duplicate names (the JTC compares the count only); no negative stamp or time_from_start.
Not modelled: Franka's acceleration and jerk limits, tolerances, cmd_timeout (0 by default), speed scaling,
positions_upsampling (off by default), the action interface, partial goals, wraparound, and the blending of
`allow_trajectory_replacement` (it starts a past-stamped trajectory now, which only gives it more time).

Servo rules (`ServoFollower`, geometry_msgs/TwistStamped):
- incoming_command_timeout (default 0.1 s) counts from header.stamp, not arrival (servo_node.cpp
  `processTwistCommand`): an old or zero stamp is stale and Servo halts (smoothHalt; here at once).
- An empty frame_id is invalid (common.cpp `isValidCommand`), as is a non-finite value. Servo transforms another
  known frame to the planning frame (servo.cpp `toPlanningFrame`); this double has no TF and demands the planning
  frame itself: stricter. An invalid command stops the motion (status INVALID, nothing published).
- With command_in_type speed_units Servo scales a twist above scale.linear down; this double rejects it, and
  stamps over FUTURE_TOLERANCE_S ahead (they would stay fresh too long).
Not modelled: rotation (angular speed is checked, the orientation held), singularities, collisions, smoothing.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory

Clock = Callable[[], float]
VELOCITY_TOLERANCE = 1.0 + 1e-6
FINAL_VELOCITY_EPS = float(np.finfo(np.float32).eps)  # the JTC compares with std::numeric_limits<float>::epsilon()
FUTURE_TOLERANCE_S = 0.01
COMMANDS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
BASE_FRAME = "fr3_link0"
HISTORY_LIMIT = 1_000_000  # records each double keeps (trajectories received, commands sampled)


@dataclass
class JointLimits:
    """Joint names with position (rad) and velocity (rad/s) limits, in the controller's joint order."""

    names: list[str]
    lower: list[float]
    upper: list[float]
    velocity: list[float]


# Franka's FR3 limits (robot specifications, "Limits for Franka Research 3"; franka_description fr3/joint_limits.yaml)
FRANKA_FR3 = JointLimits(
    names=[f"fr3_joint{i}" for i in range(1, 8)],
    lower=[-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159],
    upper=[2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159],
    velocity=[2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26],
)
FR3_READY = [0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4]

# Franka's Denavit-Hartenberg parameters (Craig's convention) per joint: a_{i-1} (m), d_i (m), alpha_{i-1} (rad)
_R = math.pi / 2
DH_A, DH_D = (0, 0, 0, 0.0825, -0.0825, 0, 0.088), (0.333, 0, 0.316, 0, 0.384, 0, 0)
FR3_DH = list(zip(DH_A, DH_D, (0, -_R, _R, _R, -_R, _R, _R), strict=True))
FLANGE_D, HAND_D = 0.107, 0.1034  # the hand's TCP is also turned -pi/4 about z from the flange


def _craig(a: float, d: float, alpha: float, theta: float) -> np.ndarray:
    ca, sa, ct, st = math.cos(alpha), math.sin(alpha), math.cos(theta), math.sin(theta)
    return np.array([[ct, -st, 0, a], [st * ca, ct * ca, -sa, -d * sa], [st * sa, ct * sa, ca, d * ca], [0, 0, 0, 1]])


def quaternion_xyzw(r: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w), w >= 0, of a rotation matrix (the top eigenvector of Bar-Itzhack's K)."""
    (a, b, c), (d, e, f), (g, h, i) = r
    rows = [a - e - i, d + b, g + c, h - f], [d + b, e - a - i, h + f, c - g], [g + c, h + f, i - a - e, d - b]
    k = np.array([*rows, [h - f, c - g, d - b, a + e + i]])
    q = np.linalg.eigh(k)[1][:, -1]
    return -q if q[3] < 0 else q


def fr3_end_effector(q: Sequence[float], hand: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Flange (with hand: Franka Hand TCP) position (m) and orientation (x, y, z, w) in fr3_link0."""
    t = np.eye(4)
    for (a, d, alpha), theta in zip(FR3_DH, q, strict=True):
        t = t @ _craig(a, d, alpha, float(theta))
    t = t @ _craig(0, FLANGE_D, 0, 0)
    if hand:
        t = t @ _craig(0, HAND_D, 0, -math.pi / 4)
    return t[:3, 3].copy(), quaternion_xyzw(t[:3, :3])


class Point(NamedTuple):
    """One trajectory point: positions, velocities (or empty), time_from_start (s), accelerations, effort."""

    positions: Sequence[float]
    velocities: Sequence[float]
    time_from_start: float
    accelerations: Sequence[float] = ()
    effort: Sequence[float] = ()


def _finite(*values: Any) -> bool:
    return all(np.all(np.isfinite(np.asarray(v, dtype=float))) for v in values)


class TrajectoryFollower:
    """The JTC's topic interface on position-controlled mock hardware, on a clock in seconds."""

    def __init__(self, limits: JointLimits, initial_positions: Sequence[float], clock: Clock = time.monotonic):
        self.limits, self.clock = limits, clock
        self.index = {name: i for i, name in enumerate(limits.names)}
        self.lower, self.upper = np.array(limits.lower, float), np.array(limits.upper, float)
        self.max_velocity = np.array(limits.velocity, float) * VELOCITY_TOLERANCE
        q0 = np.array(initial_positions, float)
        if q0.shape != self.lower.shape or not _finite(q0) or np.any(q0 < self.lower) or np.any(q0 > self.upper):
            raise ValueError(f"initial positions {list(q0)} are not {len(self.lower)} values within the limits")
        self._times, self._positions = [float(clock())], [q0]  # the plan's knots, linear in between
        # the arm's measured positions, when it is not mock hardware: a trajectory that starts now starts
        # from them (the JTC's default, open_loop_control false), not from the last command
        self.measured: Callable[[], np.ndarray] | None = None
        self.rejected: Counter[str] = Counter()
        self.accepted = 0

    def submit(
        self, joint_names: Sequence[str], points: Sequence[Sequence[Any]], stamp_s: float, now: float | None = None
    ) -> str | None:
        """Check and take a trajectory: None when accepted, else the reason of the rejection (str)."""
        now = self.clock() if now is None else float(now)
        reason = self._take(list(joint_names), [Point(*p) for p in points], float(stamp_s), now)
        if reason is None:
            self.accepted += 1
        else:
            self.rejected[reason] += 1
        return reason

    def _take(self, names: list[str], points: list[Point], stamp: float, now: float) -> str | None:
        n = len(names)
        if not names:
            return "no joint names"
        if any(name not in self.index for name in names):
            return "unknown joint"
        if len(set(names)) != n:
            return "duplicate joint"
        if n != len(self.index):
            return "missing joints"
        if not points:
            return "empty trajectory"
        for p in points:
            for values, what in zip(p[:2] + p[3:4], ("positions", "velocities", "accelerations"), strict=True):
                if len(values) != n and (what == "positions" or len(values)):
                    return f"{what} size"
            if len(p.effort):
                return "effort not supported"
        if not _finite(stamp, *(p.time_from_start for p in points), *(v for p in points for v in p[:2] + p[3:4])):
            return "non-finite value"
        tfs = np.array([p.time_from_start for p in points], float)
        if stamp < 0 or tfs[0] < 0:
            return "negative time"
        if np.any(np.diff(tfs) <= 0):
            return "time_from_start not increasing"
        if np.any(np.abs(points[-1].velocities) > FINAL_VELOCITY_EPS):
            return "nonzero final velocity"
        if stamp != 0.0 and stamp + tfs[-1] < now:
            return "ends in the past"
        order = [self.index[name] for name in names]
        targets, speeds = np.zeros((len(points), n)), np.zeros((len(points), n))
        for i, p in enumerate(points):
            targets[i, order] = p.positions
            speeds[i, order] = np.abs(p.velocities) if len(p.velocities) else 0.0
        if np.any(targets < self.lower) or np.any(targets > self.upper):
            return "outside joint limits"
        start = now if stamp == 0.0 else stamp
        anchor = max(start, now)  # the old plan runs until the new one starts; past points are skipped
        times = start + tfs
        knot_t, knot_q = np.concatenate([[anchor], times[times >= anchor]]), targets[times >= anchor]
        here = self.measured() if self.measured is not None and anchor <= now else self.sample(anchor)
        knot_q = np.vstack([here, knot_q])
        dt, dq = np.diff(knot_t), np.abs(np.diff(knot_q, axis=0))
        with np.errstate(divide="ignore", invalid="ignore"):
            implied = np.where(dq > 0, dq / dt[:, None], 0.0)
        if np.any(implied > self.max_velocity) or np.any(speeds > self.max_velocity):
            return "over velocity limit"
        old = [(t, q) for t, q in zip(self._times, self._positions, strict=True) if t < anchor]
        while len(old) > 1 and old[1][0] <= now:  # keep one knot at or before now
            old.pop(0)
        new = [(t, q) for i, (t, q) in enumerate(zip(knot_t, knot_q, strict=True)) if i == 0 or t > anchor]
        self._times, self._positions = [float(t) for t, _ in old + new], [q for _, q in old + new]
        return None

    def sample(self, now: float | None = None) -> np.ndarray:
        """The commanded positions at `now`: linear between knots, holding the first before and the last after."""
        now = self.clock() if now is None else float(now)
        return np.array([np.interp(now, self._times, column) for column in np.array(self._positions).T])

    def velocities(self, now: float | None = None) -> np.ndarray:
        """The commanded joint velocities at `now`: the slope of the current segment."""
        now = self.clock() if now is None else float(now)
        i = int(np.searchsorted(self._times, now, side="right"))
        if i in (0, len(self._times)):
            return np.zeros(len(self.lower))
        return (self._positions[i] - self._positions[i - 1]) / (self._times[i] - self._times[i - 1])

    def positions(self, now: float | None = None) -> np.ndarray:
        """The mock hardware's state: the command, mirrored (as mock_components/GenericSystem does)."""
        return self.sample(now)


class ServoFollower:
    """MoveIt Servo's twist input, integrating the end effector's position while the command is fresh."""

    def __init__(self, frame: str = BASE_FRAME, max_linear_speed: float = 0.4, timeout_s: float = 0.1, **kw: Any):
        """kw: max_angular_speed (rad/s, 0.8), initial_xyz (m, the flange at FR3_READY), clock (time.monotonic)."""
        self.frame, self.max_linear_speed, self.timeout_s = frame, max_linear_speed, timeout_s
        self.max_angular_speed: float = kw.pop("max_angular_speed", 0.8)
        xyz = kw.pop("initial_xyz", None)
        self.xyz = np.array(fr3_end_effector(FR3_READY)[0] if xyz is None else xyz, float)
        self.clock: Clock = kw.pop("clock", time.monotonic)
        if kw:
            raise TypeError(f"unexpected arguments {sorted(kw)}")
        self.velocity, self.stale_at = np.zeros(3), -math.inf  # the last accepted command is fresh until stale_at
        self.engaged, self.halted, self._t = False, True, float(self.clock())
        self.rejected: Counter[str] = Counter()
        self.accepted = self.timeouts = 0

    def submit(
        self, frame_id: str, linear: Sequence[float], angular: Sequence[float], stamp_s: float, now: float | None = None
    ) -> str | None:
        """Take one twist (m/s, rad/s): None when accepted, else the reason; a rejected twist stops the motion."""
        now = self.clock() if now is None else float(now)
        self.advance(now)
        lin, ang, stamp = np.asarray(linear, float), np.asarray(angular, float), float(stamp_s)
        reason = self._check(frame_id, lin, ang, stamp, now)
        if reason is not None:
            self.rejected[reason] += 1
            self.velocity = np.zeros(3)
            return reason
        self.accepted += 1
        self.velocity, self.stale_at = lin.copy(), stamp + self.timeout_s
        self.engaged, self.halted = True, False
        return None

    def _check(self, frame_id: str, lin: np.ndarray, ang: np.ndarray, stamp: float, now: float) -> str | None:
        if not _finite(lin, ang, stamp):
            return "non-finite value"
        if not frame_id:
            return "empty frame_id"
        if frame_id != self.frame:
            return "wrong frame"
        if np.linalg.norm(lin) > self.max_linear_speed * VELOCITY_TOLERANCE:
            return "over linear speed"
        if np.linalg.norm(ang) > self.max_angular_speed * VELOCITY_TOLERANCE:
            return "over angular speed"
        if now - stamp >= self.timeout_s:
            return "stale stamp"
        if stamp > now + FUTURE_TOLERANCE_S:
            return "stamp in the future"
        return None

    def advance(self, now: float | None = None) -> np.ndarray:
        """Integrate up to `now` and return the position; a command as old as the timeout halts the arm."""
        now = self.clock() if now is None else float(now)
        end = min(now, self.stale_at)
        if end > self._t:
            self.xyz = self.xyz + self.velocity * (end - self._t)
        self._t = max(self._t, now)
        if now >= self.stale_at and not self.halted:
            self.halted, self.velocity = True, np.zeros(3)
            self.timeouts += self.engaged
        return self.xyz.copy()

    def disengage(self) -> None:
        """The commander stopped on purpose (between episodes): halt; no timeout counts until it commands again."""
        self.advance()
        self.engaged, self.halted, self.velocity = False, True, np.zeros(3)


def synthetic_image(xyz: Sequence[float], width: int = 64, height: int = 64) -> np.ndarray:
    """An rgb8 picture from above: a red dot where the end effector is (x 0.1..0.8 m down, y -0.4..0.4 m across)."""
    image = np.full((height, width, 3), 96, np.uint8)
    row, col = (float(xyz[0]) - 0.1) / 0.7 * (height - 1), (float(xyz[1]) + 0.4) / 0.8 * (width - 1)
    radius = 1.0 + 4.0 * min(max(float(xyz[2]), 0.0), 1.0)  # higher looks bigger
    rows, cols = np.ogrid[:height, :width]
    image[(rows - row) ** 2 + (cols - col) ** 2 <= radius**2] = (220, 30, 30)
    return image


class Received(NamedTuple):
    time: float  # the double's seconds (see now_s)
    outcome: str  # "accepted" or the reason of the rejection
    first: tuple[float, ...] = ()  # the first point's positions (a hold repeats a published joint state)
    sent: float = 0.0  # system clock (s) when the publisher sent it, from the middleware's message info
    arrived: float = 0.0  # system clock (s) when the middleware received it (before any Python callback ran)


class _DoubleNode(Node):
    """A lock, ee_pose, the synthetic camera, and times in seconds since `origin_ns` (1e6 s before the node started,
    so that float64 keeps them to 1e-10 s; a zero stamp stays 0, the JTC's "start now")."""

    follower: Any  # and the subclass's _tick() and ee_xyz()

    def __init__(self, name: str, *, rate_hz: float = 100.0, camera_rate_hz: float | None = 30.0, **kw: Any):
        """rate_hz: ee_pose (and joint_states) rate; camera_rate_hz: 0 or None for no camera; image_size: (w, h)."""
        self.image_size: tuple[int, int] = kw.pop("image_size", (64, 64))
        super().__init__(name, **kw)
        self.lock = threading.RLock()
        self.origin_ns = self.get_clock().now().nanoseconds - 10**15
        self.pose_pub = self.create_publisher(PoseStamped, "ee_pose", qos_profile_sensor_data)
        self.create_timer(1.0 / rate_hz, self._tick)
        if camera_rate_hz:
            self.image_pub = self.create_publisher(Image, "camera/top/image_raw", qos_profile_sensor_data)
            self.create_timer(1.0 / camera_rate_hz, self._publish_image)

    def now_s(self) -> float:
        return (self.get_clock().now().nanoseconds - self.origin_ns) * 1e-9

    def seconds(self, stamp: Any) -> float:
        """A builtin_interfaces Time on the double's seconds (0 stays 0)."""
        ns = stamp.sec * 10**9 + stamp.nanosec
        return 0.0 if ns == 0 else (ns - self.origin_ns) * 1e-9

    @property
    def rejected(self) -> Counter[str]:
        with self.lock:
            return Counter(self.follower.rejected)

    @property
    def accepted(self) -> int:
        with self.lock:
            return self.follower.accepted

    def _publish_pose(self, xyz: np.ndarray, quat: np.ndarray) -> None:
        msg = PoseStamped()
        msg.header.stamp, msg.header.frame_id = self.get_clock().now().to_msg(), BASE_FRAME
        p, o = msg.pose.position, msg.pose.orientation
        p.x, p.y, p.z = (float(v) for v in xyz)
        o.x, o.y, o.z, o.w = (float(v) for v in quat)
        self.pose_pub.publish(msg)

    def _publish_image(self) -> None:
        width, height = self.image_size
        pixels = synthetic_image(self.ee_xyz(), width, height)
        msg = Image(height=height, width=width, encoding="rgb8", step=3 * width, data=pixels.tobytes())
        msg.header.stamp, msg.header.frame_id = self.get_clock().now().to_msg(), "camera_top"
        self.image_pub.publish(msg)


class JointTrajectoryControllerDouble(_DoubleNode):
    """A JTC on mock FR3 hardware: `<prefix>/joint_trajectory` in; joint_states, ee_pose and a camera out."""

    def __init__(self, name: str = "joint_trajectory_controller_double", *, prefix="joint_trajectory_controller", **kw):
        """kw: limits (FRANKA_FR3), initial_positions (FR3_READY), rate_hz, camera_rate_hz, image_size, Node's own."""
        limits, initial = kw.pop("limits", FRANKA_FR3), kw.pop("initial_positions", FR3_READY)
        super().__init__(name, **kw)
        self.follower = TrajectoryFollower(limits, initial, self.now_s)
        self._trajectories: deque[Received] = deque(maxlen=HISTORY_LIMIT)
        self._commands: deque[tuple[float, tuple[float, ...]]] = deque(maxlen=HISTORY_LIMIT)
        self.state_pub = self.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
        self.create_subscription(JointTrajectory, f"{prefix}/joint_trajectory", self._on_trajectory, COMMANDS)

    def _on_trajectory(self, msg: JointTrajectory, info: Any) -> None:
        points = []
        for p in msg.points:
            t = p.time_from_start
            points.append(Point(p.positions, p.velocities, t.sec + t.nanosec * 1e-9, p.accelerations, p.effort))
        with self.lock:
            now = self.now_s()
            reason = self.follower.submit(msg.joint_names, points, self.seconds(msg.header.stamp), now)
            first = tuple(map(float, msg.points[0].positions)) if msg.points else ()
            sent, arrived = info["source_timestamp"] * 1e-9, info["received_timestamp"] * 1e-9
            self._trajectories.append(Received(now, reason or "accepted", first, sent, arrived))

    def _tick(self) -> None:
        with self.lock:
            now = self.now_s()
            q, dq = self.follower.positions(now), self.follower.velocities(now)
            self._commands.append((now, tuple(map(float, q))))
        msg = JointState(name=list(self.follower.limits.names), position=list(map(float, q)))
        msg.velocity, msg.header.stamp = list(map(float, dq)), self.get_clock().now().to_msg()
        self.state_pub.publish(msg)
        self._publish_pose(*fr3_end_effector(q))

    def ee_xyz(self) -> np.ndarray:
        with self.lock:
            return fr3_end_effector(self.follower.positions(self.now_s()))[0]

    @property
    def received(self) -> int:
        with self.lock:
            return self.follower.accepted + sum(self.follower.rejected.values())

    def history(self) -> tuple[list[Received], list[tuple[float, tuple[float, ...]]]]:
        """Copies of (trajectories received, commands sampled as (time, positions)), oldest first."""
        with self.lock:
            return list(self._trajectories), list(self._commands)


class ServoDouble(_DoubleNode):
    """MoveIt Servo's twist input: servo_node/delta_twist_cmds in; ee_pose and a camera out."""

    def __init__(self, name: str = "servo_double", *, frame=BASE_FRAME, topic="servo_node/delta_twist_cmds", **kw):
        """kw: max_linear_speed (0.4 m/s), timeout_s (0.1), initial_xyz (the flange at FR3_READY), rate_hz,
        camera_rate_hz, image_size, Node's own."""
        speed, timeout = kw.pop("max_linear_speed", 0.4), kw.pop("timeout_s", 0.1)
        start = kw.pop("initial_xyz", None)
        super().__init__(name, **kw)
        self.follower = ServoFollower(frame, speed, timeout, clock=self.now_s, initial_xyz=start)
        self.orientation = fr3_end_effector(FR3_READY)[1]
        self.state_pub = self.create_publisher(JointState, "joint_states", qos_profile_sensor_data)
        self.create_subscription(TwistStamped, topic, self._on_twist, COMMANDS)

    def _on_twist(self, msg: TwistStamped) -> None:
        lin, ang, stamp = msg.twist.linear, msg.twist.angular, self.seconds(msg.header.stamp)
        with self.lock:
            self.follower.submit(msg.header.frame_id, (lin.x, lin.y, lin.z), (ang.x, ang.y, ang.z), stamp)

    def _tick(self) -> None:
        self._publish_pose(self.ee_xyz(), self.orientation)
        # a Cartesian double: the arm's joint states are published as a real FR3's are, held at the ready pose
        msg = JointState(name=list(FRANKA_FR3.names), position=list(map(float, FR3_READY)))
        msg.header.stamp = self.get_clock().now().to_msg()
        self.state_pub.publish(msg)

    def ee_xyz(self) -> np.ndarray:
        with self.lock:
            return self.follower.advance()

    def disengage(self) -> None:
        with self.lock:
            self.follower.disengage()

    @property
    def timeouts(self) -> int:
        with self.lock:
            return self.follower.timeouts
