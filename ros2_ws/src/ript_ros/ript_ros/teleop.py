"""Teleoperation: a person takes over the arm from the policy with the device the lab already drives it with.

A gamepad (`joy_node`) or a SpaceMouse (`spacenav`) publishes sensor_msgs/Joy; a teleop stack may publish
geometry_msgs/TwistStamped instead. Either way a dead-man button on the Joy topic decides who commands the
arm, once per control period (`Teleop.decide`):
- held, and its messages fresh: the person (the Joy axes, or the twist, mapped onto the policy's action
  dimensions, the gripper from a button) through the same safety filter to the same command adapter;
- released: the policy, which re-plans from the newest observation;
- held but stale (the device or its driver stopped publishing) while the person commands: hold, like any
  stale input. A dead-man that goes stale while the policy commands changes nothing: it was not held.
Nothing a teleop topic carries moves the arm without the dead-man.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ript_ros.config import TeleopConfig
from ript_ros.convert import InputError


class Control(enum.Enum):
    POLICY = "policy"
    PERSON = "person"
    HOLD = "hold"  # a person was commanding and their input went stale


@dataclass(frozen=True)
class Decision:
    """Who commands the arm this period, the person's command when it is them, and why it holds."""

    control: Control
    command: np.ndarray | None = None
    reason: str = ""


class Teleop:
    """The dead-man state machine and the mapping from a device's message to an action (see the module)."""

    def __init__(
        self, cfg: TeleopConfig, action_dim: int, gripper_index: int, clock: Callable[[], float] = time.monotonic
    ):
        """action_dim: the policy's; gripper_index: its gripper dimension (-1: none); clock: seconds."""
        if cfg.source == "joy" and len(cfg.joy_axes) > action_dim:
            raise ValueError(f"teleop.joy_axes maps {len(cfg.joy_axes)} dimensions, the policy has {action_dim}")
        if cfg.source == "twist" and len(cfg.twist_fields) > action_dim:
            raise ValueError(
                f"teleop.twist_fields maps {len(cfg.twist_fields)} dimensions, the policy has {action_dim}"
            )
        self.cfg, self.action_dim, self.gripper_index, self.clock = cfg, action_dim, gripper_index, clock
        self.held = False  # the dead-man, as the newest Joy message says
        self.closing = False  # the gripper button
        self.joy_at: float | None = None  # when the newest Joy message arrived
        self.twist: np.ndarray | None = None
        self.twist_at: float | None = None
        self.axes = np.zeros(0)
        self.person = False  # the person commands now (decided last period)
        self.takeovers = 0

    def on_joy(self, msg: Any) -> None:
        """A sensor_msgs/Joy: its dead-man and gripper buttons and its axes (InputError when it lacks them)."""
        c, buttons, axes = self.cfg, list(msg.buttons), np.asarray(msg.axes, np.float64)
        needed = max(c.deadman_button, c.close_button)
        if len(buttons) <= needed:
            raise InputError(
                f"teleop Joy message on {c.joy_topic} has {len(buttons)} buttons; teleop.deadman_button / "
                f"close_button need {needed + 1}: check the device's button map"
            )
        if c.source == "joy":
            if axes.size <= max(c.joy_axes, default=-1):
                raise InputError(f"teleop Joy message has {axes.size} axes; teleop.joy_axes {c.joy_axes} needs more")
            if not np.all(np.isfinite(axes)):
                raise InputError(f"teleop Joy message on {c.joy_topic} has non-finite axes")
        self.held, self.joy_at = bool(buttons[c.deadman_button]), self.clock()
        self.closing = c.close_button >= 0 and bool(buttons[c.close_button])
        self.axes = axes

    def on_twist(self, msg: Any) -> None:
        """A geometry_msgs/TwistStamped: the mapped fields (InputError when one is not finite)."""
        picked = [float(getattr(getattr(msg.twist, f.split(".")[0]), f.split(".")[1])) for f in self.cfg.twist_fields]
        if not all(math.isfinite(v) for v in picked):
            fields = dict(zip(self.cfg.twist_fields, picked, strict=True))
            raise InputError(f"teleop twist on {self.cfg.twist_topic} has non-finite fields: {fields}")
        self.twist, self.twist_at = np.asarray(picked, np.float64), self.clock()

    def age(self) -> float:
        """Seconds since the newest Joy message (inf before the first)."""
        return math.inf if self.joy_at is None else self.clock() - self.joy_at

    def decide(self) -> Decision:
        """Who commands the arm this period (see the module docstring)."""
        now, c = self.clock(), self.cfg
        fresh = self.joy_at is not None and now - self.joy_at <= c.max_age_s
        if not self.held or (not fresh and not self.person):
            self.person = False
            return Decision(Control.POLICY)
        if not fresh:
            return Decision(Control.HOLD, reason=f"teleop input {now - self.joy_at:.2f} s old with the dead-man held")
        command = np.zeros(self.action_dim, np.float32)
        if c.source == "joy":
            for i, (axis, scale) in enumerate(zip(c.joy_axes, c.scales, strict=True)):
                command[i] = scale * self.axes[axis]
        else:
            if self.twist_at is None or now - self.twist_at > c.max_age_s:
                age = "no twist yet" if self.twist_at is None else f"twist {now - self.twist_at:.2f} s old"
                return Decision(Control.HOLD, reason=f"teleop {age} with the dead-man held")
            command[: len(self.twist)] = np.asarray(c.scales) * self.twist
        if self.gripper_index >= 0:
            command[self.gripper_index] = 1.0 if self.closing else -1.0
        if not self.person:
            self.takeovers += 1
        self.person = True
        return Decision(Control.PERSON, command)
