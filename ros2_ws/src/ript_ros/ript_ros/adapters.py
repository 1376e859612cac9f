"""Command adapters: one safety-filtered action becomes the messages an arm's controller accepts.

Each adapter honours its controller's documented contract, and a last guard refuses to
publish anything non-finite or beyond the limits (`UnsafeCommand`: the node holds and ends
the episode as a fault), so no bad value reaches the arm whatever happened upstream.

- `twist` (MoveIt Servo): TwistStamped in `m/s` per action unit (`twist_scale`, derived from
  the workspace's metres per step when 0), `frame_id` set to the workspace frame, stamped now.
- `joint_trajectory` (ros2_control's JointTrajectoryController): header stamp zero (start on
  receipt) or now, joint names as the controller lists them, absolute positions within each
  joint's limits, reachable within one control period at its velocity limit, no velocity at
  the end. The policy's actions are joint deltas or absolute joints, as `command.action_space`
  declares. A hold is one point where the arm is (the controller rejects an empty trajectory).
- the gripper: open/closed with hysteresis (a sampled policy near 0 would chatter), or as is.
"""

from __future__ import annotations

import math

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import TwistStamped
from std_msgs.msg import Float64
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ript_ros.config import CommandConfig

VELOCITY_MARGIN = 0.98  # plan at most this fraction of a joint's velocity limit


class UnsafeCommand(ValueError):
    """A command the last guard refused to publish; the message names the value and the limit."""


def duration(seconds: float) -> Duration:
    sec, nanosec = divmod(round(seconds * 1e9), 1_000_000_000)
    return Duration(sec=sec, nanosec=nanosec)


class Gripper:
    """Gripper action -> command: binary with hysteresis (open below one threshold, close above another)."""

    def __init__(self, config: CommandConfig):
        self.config = config
        self.closed = False

    def reset(self) -> None:
        self.closed = False

    def command(self, value: float) -> float:
        c = self.config
        if c.gripper_mode == "continuous":
            return float(value)
        if value > c.gripper_close_above:
            self.closed = True
        elif value < c.gripper_open_below:
            self.closed = False
        return c.gripper_closed_value if self.closed else c.gripper_open_value

    def open_command(self) -> float:
        self.closed = False
        c = self.config
        return c.gripper_open_value if c.gripper_mode == "binary" else min(c.gripper_open_value, c.gripper_open_below)


class CommandAdapter:
    """One action <-> the messages of the configured controller (see the module docstring)."""

    def __init__(
        self,
        config: CommandConfig,
        action_dim: int,
        control_hz: float,
        twist_scale: float = 1.0,
        frame: str = "",
        action_bound: float = 1.0,
    ):
        """action_dim: length of one action; control_hz: command rate, Hz; twist_scale: m/s per action unit;
        frame: the twist's frame_id; action_bound: largest |action| the safety filter lets through."""
        self.config = config
        self.action_dim = action_dim
        self.period_s = 1.0 / control_hz
        self.twist_scale = twist_scale
        self.frame = frame
        self.action_bound = action_bound
        self.gripper = Gripper(config)
        self.last_target: np.ndarray | None = None  # the JTC adapter's last commanded positions
        self.arm_dims = [i for i in range(action_dim) if i != config.gripper_index]
        if config.gripper_index >= action_dim:
            raise ValueError(f"command.gripper_index {config.gripper_index} is outside the {action_dim}-dim action")
        if config.adapter == "twist":
            if len(config.twist_axes) != len(self.arm_dims):
                raise ValueError(
                    f"command.twist_axes {config.twist_axes} and gripper_index {config.gripper_index} must cover "
                    f"the {action_dim} action dimensions exactly"
                )
            return
        if len(config.joints) != len(self.arm_dims):
            raise ValueError(
                f"command.joints names {len(config.joints)} joints for the {len(self.arm_dims)} arm dimensions of a "
                f"{action_dim}-dim action (gripper_index {config.gripper_index})"
            )
        self.lower = np.asarray(config.joint_lower, np.float64)
        self.upper = np.asarray(config.joint_upper, np.float64)
        self.velocity = np.asarray(config.joint_velocity, np.float64)

    # ---- the policy's commands ----------------------------------------------------------------
    def to_messages(
        self, command: np.ndarray, joints: np.ndarray | None, now: Time, future: np.ndarray | None = None
    ) -> dict[str, object]:
        """Messages by kind ('twist', 'gripper', 'trajectory') for one command.

        joints: the arm's measured positions of `command.joints` (the joint_trajectory adapter needs
        them); future: the chunk's next actions, sent as further points when `send_chunk` is on.
        UnsafeCommand when anything would be non-finite or beyond a limit."""
        out: dict[str, object] = {}
        if self.config.adapter == "twist":
            out["twist"] = self._twist(command[self.arm_dims], now)
        else:
            if joints is None:
                raise UnsafeCommand("the joint_trajectory adapter needs the arm's joint positions; none are valid")
            out["trajectory"] = self._trajectory(command, joints, now, future)
        if self.config.gripper_index >= 0:
            value = self.gripper.command(float(command[self.config.gripper_index]))
            out["gripper"] = Float64(data=self._finite(value, "gripper command"))
        return out

    def _twist(self, arm: np.ndarray, now: Time) -> TwistStamped:
        twist = TwistStamped()
        twist.header.stamp = now
        twist.header.frame_id = self.frame
        limit = self.twist_scale * self.action_bound * (1 + 1e-6)
        for axis, value in zip(self.config.twist_axes, arm, strict=True):
            speed = self._finite(float(value) * self.twist_scale, axis)
            if abs(speed) > limit:
                raise UnsafeCommand(f"twist {axis} {speed:.4g} exceeds {limit:.4g} (twist_scale x action bound)")
            group, field = axis.split(".")
            setattr(getattr(twist.twist, group), field, speed)
        return twist

    def targets(self, actions: np.ndarray, joints: np.ndarray) -> np.ndarray:
        """Absolute joint targets, one row per action, each within the joint limits and reachable
        from the one before (the first from `joints`) in one period at the velocity limits."""
        step = self.velocity * self.period_s * VELOCITY_MARGIN
        out = np.empty((len(actions), len(self.arm_dims)))
        previous = np.asarray(joints, np.float64)
        for k, action in enumerate(actions):
            arm = np.asarray(action, np.float64)[self.arm_dims]
            wanted = (
                previous + arm * self.config.radians_per_action if self.config.action_space == "joint_delta" else arm
            )
            previous = out[k] = np.clip(np.clip(wanted, previous - step, previous + step), self.lower, self.upper)
        return out

    def _trajectory(
        self, command: np.ndarray, joints: np.ndarray, now: Time, future: np.ndarray | None
    ) -> JointTrajectory:
        actions = command[None]
        if future is not None and self.config.send_chunk:
            actions = np.vstack([actions, np.asarray(future, np.float32).reshape(-1, command.size)])
        targets = self.targets(actions, joints)
        self.check_targets(targets, joints)
        self.last_target = targets[0]
        msg = self._trajectory_header(now)
        msg.points = [
            JointTrajectoryPoint(positions=[float(v) for v in row], time_from_start=duration((k + 1) * self.period_s))
            for k, row in enumerate(targets)
        ]
        return msg

    def check_targets(self, targets: np.ndarray, joints: np.ndarray, seconds_per_point: float | None = None) -> None:
        """The last guard of the trajectory path: UnsafeCommand unless every target is finite, within the
        limits, and each is reachable from the one before within `seconds_per_point` (default one period)."""
        if not np.isfinite(targets).all() or not np.isfinite(joints).all():
            raise UnsafeCommand(f"non-finite joint target or measured position: {targets.tolist()} from {joints}")
        outside = (targets < self.lower - 1e-9) | (targets > self.upper + 1e-9)
        if outside.any():
            j = int(np.argwhere(outside)[0][1])
            raise UnsafeCommand(f"joint {self.config.joints[j]} target outside [{self.lower[j]}, {self.upper[j]}] rad")
        seconds = self.period_s if seconds_per_point is None else seconds_per_point
        moves = np.abs(np.diff(np.vstack([joints[None], targets]), axis=0))
        if (moves > self.velocity * seconds * (1 + 1e-6)).any():
            j = int(np.argwhere(moves > self.velocity * seconds * (1 + 1e-6))[0][1])
            raise UnsafeCommand(f"joint {self.config.joints[j]} would exceed {self.velocity[j]} rad/s")

    def _trajectory_header(self, now: Time) -> JointTrajectory:
        msg = JointTrajectory(joint_names=list(self.config.joints))
        if self.config.trajectory_stamp == "now":
            msg.header.stamp = now
        return msg  # a zero stamp: the controller starts the trajectory when it receives it

    @staticmethod
    def _finite(value: float, what: str) -> float:
        if not math.isfinite(value):
            raise UnsafeCommand(f"{what} is {value}: refused")
        return value

    # ---- holding and homing -------------------------------------------------------------------
    def hold(self, now: Time, joints: np.ndarray | None = None) -> dict[str, object]:
        """Messages that hold the arm where it is (the gripper unchanged): a zero twist; for the JTC, which
        refuses an empty trajectory, one point at `joints` (the fresh measured positions) or else at the
        last target sent, which the arm has reached or nearly (nothing when there is neither)."""
        if self.config.adapter == "twist":
            return {"twist": self._twist(np.zeros(len(self.arm_dims)), now)}
        here = joints if joints is not None and np.isfinite(joints).all() else self.last_target
        if here is None:
            return {}
        msg = self._trajectory_header(now)
        msg.points = [JointTrajectoryPoint(positions=[float(v) for v in here], time_from_start=duration(self.period_s))]
        return {"trajectory": msg}

    def open_gripper(self) -> dict[str, object]:
        if self.config.gripper_index < 0:
            return {}
        return {"gripper": Float64(data=self.gripper.open_command())}

    def joint_goal(
        self, goal: np.ndarray, joints: np.ndarray, speed_fraction: float, now: Time
    ) -> tuple[JointTrajectory, float]:
        """One trajectory from `joints` to `goal` at `speed_fraction` of the velocity limits, and its duration, s."""
        seconds = max(float(np.max(np.abs(goal - joints) / (self.velocity * speed_fraction))), self.period_s)
        target = np.asarray(goal, np.float64)[None]
        self.check_targets(target, np.asarray(joints, np.float64), seconds)
        msg = self._trajectory_header(now)
        msg.points = [JointTrajectoryPoint(positions=[float(v) for v in goal], time_from_start=duration(seconds))]
        return msg, seconds

    # ---- the driver's side (the sim bridge) ------------------------------------------------------
    def twist_to_action(self, twist: TwistStamped, gripper: float) -> np.ndarray:
        """The action a twist (and the last gripper command) stands for: what a simulated arm applies."""
        action = np.zeros(self.action_dim, dtype=np.float32)
        for axis, dim in zip(self.config.twist_axes, self.arm_dims, strict=True):
            group, field = axis.split(".")
            action[dim] = getattr(getattr(twist.twist, group), field) / self.twist_scale
        if self.config.gripper_index >= 0:
            action[self.config.gripper_index] = gripper
        return action
