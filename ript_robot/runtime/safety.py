"""The safety filter every command passes through, on the robot and in simulation alike.

Limits are on by default. In order, a command is:
1. held (zeros) with a fault when any entry is NaN or inf: the runtime ends the episode;
2. clipped to [action_low, action_high], per dimension;
3. rate-limited: no dimension changes by more than `max_command_change` from the previous command;
4. shortened so the end effector moves at most `max_step_m` this step;
5. clipped so the predicted end-effector position stays inside the workspace box, and its
   position part held when the move would enter a keep-out box.
Steps 3-5 need the workspace calibration YAML (`SafetyConfig.workspace`). Every intervention
is counted by kind, so the runtime and the ROS diagnostics can report them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ript_robot.calibration.models import WorkspaceCalibration, load_workspace
from ript_robot.config import SafetyConfig


@dataclass
class SafetyCounters:
    """How often the filter intervened since it was created, by kind."""

    commands: int = 0
    clipped: int = 0  # commands changed by any limit below
    bounds: int = 0
    rate: int = 0
    step: int = 0
    workspace: int = 0
    keep_out: int = 0
    faults: int = 0  # non-finite actions replaced by the hold command

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class SafetyFilter:
    """Clip commands to the action bounds and the calibrated workspace; hold on NaN or inf."""

    def __init__(self, config: SafetyConfig, action_dim: int, workspace: WorkspaceCalibration | None = None):
        """action_dim: length of one command (>= 1). workspace: overrides the file named in `config.workspace`."""
        if action_dim < 1:
            raise ValueError(f"action_dim must be >= 1, got {action_dim}")
        self.config = config
        self.hold = np.zeros(action_dim, dtype=np.float32)
        self.low, self.high = config.bounds(action_dim)
        self.counters = SafetyCounters()
        if workspace is None and config.workspace:
            workspace = load_workspace(config.workspace)
        if workspace is not None and max(workspace.action_position) >= action_dim:
            raise ValueError(
                f"workspace action_position {workspace.action_position} does not fit a {action_dim}-dim action"
            )
        self.workspace = workspace

    def __call__(
        self, action: np.ndarray, state: np.ndarray | None = None, previous: np.ndarray | None = None
    ) -> tuple[np.ndarray, bool, bool]:
        """Return (command, clipped, fault). A fault means: hold the arm and end the episode.

        state: the arm's state when the command is sent (needed by the workspace limits);
        previous: the command sent one step before (for the rate limit), None at an episode start.
        """
        self.counters.commands += 1
        if action.shape != self.hold.shape:
            raise ValueError(f"action has shape {action.shape}, the env takes {self.hold.shape}")
        if not np.isfinite(action).all():
            self.counters.faults += 1
            return self.hold.copy(), False, True
        command = action.astype(np.float32, copy=True)
        if not self.config.enabled:
            return command, False, False
        hits: list[str] = []
        low, high = self.low, self.high
        if ((command < low) | (command > high)).any():
            np.clip(command, low, high, out=command)
            hits.append("bounds")
        ws = self.workspace
        if ws is not None:
            if ws.max_command_change is not None and previous is not None:
                limit = ws.max_command_change
                limited = np.clip(command, previous - limit, previous + limit)
                if not np.array_equal(limited, command):
                    command = limited.astype(np.float32)
                    hits.append("rate")
            if state is None:
                raise ValueError("the workspace limits need the arm's state: pass state= with each action")
            hits += self._limit_position(command, state, ws)
        for kind in hits:
            setattr(self.counters, kind, getattr(self.counters, kind) + 1)
        self.counters.clipped += bool(hits)
        return command, bool(hits), False

    def _limit_position(self, command: np.ndarray, state: np.ndarray, ws: WorkspaceCalibration) -> list[str]:
        """Edit the position part of `command` in place; return the kinds of limits that acted."""
        hits = []
        axes = ws.action_position
        position = state[ws.state_position].astype(np.float64)
        move = command[axes].astype(np.float64) * ws.metres_per_action
        length = float(np.linalg.norm(move))
        if ws.max_step_m is not None and length > ws.max_step_m:
            move *= ws.max_step_m / length
            hits.append("step")
        # from inside, stop at the wall; from outside (after a bump), moving back in is allowed, further out is not
        lowest = np.minimum(np.asarray(ws.box.low) - position, 0.0)
        highest = np.maximum(np.asarray(ws.box.high) - position, 0.0)
        inside = np.clip(move, lowest, highest)
        if not np.array_equal(inside, move):
            move = inside
            hits.append("workspace")
        if any(box.contains(position + move) for box in ws.keep_out):
            move[:] = 0.0
            hits.append("keep_out")
        if hits:
            command[axes] = (move / ws.metres_per_action).astype(np.float32)
        return hits
