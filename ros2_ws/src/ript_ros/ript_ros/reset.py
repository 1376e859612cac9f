"""The reset before every rollout: open the gripper, retreat, go home, and check the pose.

The K rollouts of one context are compared with each other (leave-one-out), so they must
start from the same arm state: a rollout that starts where the last one ended, perhaps
still holding the object, is noise in every group. After each episode `Homing` opens the
gripper and drives the arm home through the same command adapter the policy uses: one
joint-space goal for the trajectory adapter (at a fraction of the velocity limits), or, for
the twist adapter, a rise of `retreat_m` and then a proportional servo to the home position
through the safety filter. `pose_error` is what `~/start` checks against the tolerance.
"""

from __future__ import annotations

import time
from enum import Enum

import numpy as np
from builtin_interfaces.msg import Time

from ript_robot.calibration.models import WorkspaceCalibration
from ript_robot.runtime.safety import SafetyFilter
from ript_ros.adapters import CommandAdapter
from ript_ros.config import ResetConfig
from ript_ros.inputs import ArmInputs


class Stage(str, Enum):
    OPEN = "opening the gripper"
    RETREAT = "retreating"
    HOME = "moving home"
    DONE = "at home"


class Homing:
    """Drives the arm home between episodes, one control period at a time."""

    def __init__(
        self,
        config: ResetConfig,
        adapter: CommandAdapter,
        safety: SafetyFilter,
        workspace: WorkspaceCalibration | None,
    ):
        self.config = config
        self.adapter = adapter
        self.safety = safety
        self.workspace = workspace
        self.joint_space = adapter.config.adapter == "joint_trajectory"
        self.stage = Stage.DONE
        self.started = 0.0
        self.goal_sent_until: float | None = None  # end time of the joint goal in flight
        self.retreat_target: np.ndarray | None = None

    def pose_error(self, inputs: ArmInputs) -> tuple[float, str]:
        """How far the arm is from home (rad for joints, m for the end effector), and a description."""
        if self.joint_space:
            q = inputs.command_positions()
            if q is None:
                return float("inf"), "no valid joint state"
            error = np.abs(q - np.asarray(self.config.home_joints))
            j = int(error.argmax())
            return float(error[j]), f"joint {self.adapter.config.joints[j]} is {error[j]:.3f} rad from home"
        position = self._position(inputs)
        if position is None:
            return float("inf"), "no valid end-effector position"
        error = float(np.linalg.norm(position - np.asarray(self.config.home_position)))
        return error, f"the end effector is {error:.3f} m from home"

    def tolerance(self) -> float:
        return self.config.joint_tolerance if self.joint_space else self.config.position_tolerance

    def begin(self) -> None:
        self.stage, self.started = Stage.OPEN, time.monotonic()
        self.goal_sent_until = None
        self.retreat_target = None

    def period(self, inputs: ArmInputs, now: Time) -> tuple[dict[str, object], str]:
        """This period's messages and a fault ('' while all goes well); `stage` says where homing stands."""
        if time.monotonic() - self.started > self.config.timeout_s:
            what = self.pose_error(inputs)[1]
            return self.adapter.hold(
                now, inputs.fresh_command_positions()
            ), f"homing took longer than {self.config.timeout_s} s: {what}"
        if self.stage is Stage.OPEN:
            self.stage = Stage.HOME if self.joint_space or not self.config.retreat_m else Stage.RETREAT
            return self.adapter.open_gripper(), ""
        if inputs.stale():
            return self.adapter.hold(
                now, inputs.fresh_command_positions()
            ), ""  # wait for fresh inputs; the timeout still runs
        if self.joint_space:
            return self._joint_period(inputs, now), ""
        return self._servo_period(inputs, now), ""

    def _joint_period(self, inputs: ArmInputs, now: Time) -> dict[str, object]:
        error, _ = self.pose_error(inputs)
        if error <= self.tolerance():
            self.stage = Stage.DONE
            return {}
        clock = time.monotonic()
        if self.goal_sent_until is not None and clock < self.goal_sent_until + 2.0:
            return {}  # the controller is executing the goal (with 2 s to settle)
        q = inputs.command_positions()
        assert q is not None
        msg, seconds = self.adapter.joint_goal(np.asarray(self.config.home_joints), q, self.config.speed_fraction, now)
        self.goal_sent_until = clock + seconds
        return {"trajectory": msg}

    def _position(self, inputs: ArmInputs) -> np.ndarray | None:
        state = inputs.state()
        if state is None or self.workspace is None:
            return None
        return state[self.workspace.state_position].astype(np.float64)

    def _servo_period(self, inputs: ArmInputs, now: Time) -> dict[str, object]:
        ws = self.workspace
        position = self._position(inputs)
        assert ws is not None and position is not None
        if self.stage is Stage.RETREAT:
            if self.retreat_target is None:
                self.retreat_target = position.copy()
                self.retreat_target[-1] = min(position[-1] + self.config.retreat_m, ws.box.high[-1])
            target = self.retreat_target
        else:
            target = np.asarray(self.config.home_position, np.float64)
        offset = target - position
        if float(np.linalg.norm(offset)) <= self.config.position_tolerance * 0.5:
            self.stage = Stage.DONE if self.stage is Stage.HOME else Stage.HOME
            return self.adapter.hold(now, inputs.fresh_command_positions())
        action = np.zeros(self.adapter.action_dim, np.float32)
        fraction = self.config.speed_fraction
        action[ws.action_position] = np.clip(offset / ws.metres_per_action, -fraction, fraction)
        if self.adapter.config.gripper_index >= 0:
            action[self.adapter.config.gripper_index] = self.adapter.config.gripper_open_value
        state = inputs.state()
        command, _, fault = self.safety(action, state, None)
        return (
            self.adapter.hold(now, inputs.fresh_command_positions())
            if fault
            else self.adapter.to_messages(command, None, now)
        )
