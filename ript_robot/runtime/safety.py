"""The safety filter every command passes through, on the robot and in simulation alike.

It bounds each action dimension (limits on by default), replaces a non-finite action by the
env's hold command and flags a fault, and counts every intervention so the runtime can
report them. Workspace boxes and per-step limits from calibration join it in the ROS issue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ript_robot.config import SafetyConfig


@dataclass
class SafetyCounters:
    """How often the filter intervened since it was created."""

    commands: int = 0
    clipped: int = 0
    faults: int = 0


class SafetyFilter:
    """Clip commands to [action_low, action_high]; hold on NaN or inf."""

    def __init__(self, config: SafetyConfig, action_dim: int):
        """action_dim: length of one command (>= 1)."""
        if action_dim < 1:
            raise ValueError(f"action_dim must be >= 1, got {action_dim}")
        self.config = config
        self.hold = np.zeros(action_dim, dtype=np.float32)
        self.counters = SafetyCounters()

    def __call__(self, action: np.ndarray) -> tuple[np.ndarray, bool, bool]:
        """Return (command, clipped, fault). A fault means: hold the arm and end the episode."""
        self.counters.commands += 1
        if action.shape != self.hold.shape:
            raise ValueError(f"action has shape {action.shape}, the env takes {self.hold.shape}")
        if not np.isfinite(action).all():
            self.counters.faults += 1
            return self.hold.copy(), False, True
        if not self.config.enabled:
            return action.astype(np.float32, copy=True), False, False
        low, high = self.config.action_low, self.config.action_high
        clipped = bool(((action < low) | (action > high)).any())
        command = np.clip(action, low, high).astype(np.float32)
        self.counters.clipped += clipped
        return command, clipped, False
