"""The workspace the safety filter enforces: a box in the robot base frame, and boxes to keep out of.

A box is entered by hand (low and high corners), or recorded: the operator jogs the arm to
the corners of the safe volume and saves the end-effector positions (a poses file), and the
box is their bounding box, shrunk by a margin on every side; a recorded keep-out box is grown
by the margin instead. The result is the runtime's own `WorkspaceCalibration`, checked before
anything is written (`check_workspace`): distinct, non-negative state and action indices that fit
the action length when it is given, and the real `SafetyFilter` built from the workspace as a
reader of the file gets it, exactly as the policy node does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError

from ript_robot.calibration.models import Box, CalibrationError, RecordedPoses, WorkspaceCalibration
from ript_robot.config import SafetyConfig, dump_config, format_errors
from ript_robot.runtime.safety import SafetyFilter

AXES = "xyz"
# what the box does not say: carried over from the previous version of the same workspace when not given
SETTINGS = ("frame", "state_position", "action_position", "metres_per_action", "max_step_m", "max_command_change")
REQUIRED = ("state_position", "action_position", "metres_per_action")


def box_from_points(points: np.ndarray, margin_m: float = 0.0, keep_out: bool = False) -> Box:
    """The bounding box of recorded positions (N x D, metres), shrunk by `margin_m` per side (grown for keep-out)."""
    points = np.asarray(points, dtype=np.float64)
    what = "keep-out box" if keep_out else "workspace"
    if margin_m < 0:
        raise CalibrationError(f"the margin must be 0 m or more (it only ever makes the {what} safer), got {margin_m}")
    if points.ndim != 2 or len(points) < 2:
        raise CalibrationError(f"the {what} needs at least 2 recorded corners (opposite ones), got {len(points)}")
    pad = margin_m if keep_out else -margin_m
    low, high = points.min(axis=0) - pad, points.max(axis=0) + pad
    for axis, (lo, hi) in enumerate(zip(low, high, strict=True)):
        if hi - lo <= 0:
            span = points[:, axis].max() - points[:, axis].min()
            margin = f", no more than twice the {margin_m} m margin" if margin_m > 0 else ""
            raise CalibrationError(
                f"the recorded corners of the {what} span {span:.3f} m along {AXES[axis]}{margin}: "
                f"jog the arm to the lowest and the highest {AXES[axis]} of the volume too"
            )
    return Box(low=np.round(low, 6).tolist(), high=np.round(high, 6).tolist())  # to the micrometre


def box_from_corners(low: Sequence[float], high: Sequence[float]) -> Box:
    """A box entered by hand; CalibrationError when a low corner is not below the high one."""
    try:
        return Box(low=list(low), high=list(high))
    except ValidationError as exc:
        raise CalibrationError(format_errors(Box, exc, f"box low {list(low)} high {list(high)}")) from None


def positions(recorded: RecordedPoses) -> np.ndarray:
    """The recorded end-effector positions, N x 3 metres."""
    return np.array([pose.position for pose in recorded.poses], dtype=np.float64)


def make_workspace(
    box: Box, keep_out: Sequence[Box], settings: dict[str, Any], previous: WorkspaceCalibration | None
) -> WorkspaceCalibration:
    """The workspace calibration: `box` and `keep_out`, the given settings, the rest from `previous`."""
    merged = {k: getattr(previous, k) for k in SETTINGS} if previous is not None else {}
    merged.update({k: v for k, v in settings.items() if v is not None})
    missing = [f"--{k.replace('_', '-')}" for k in REQUIRED if k not in merged]
    if missing:
        raise CalibrationError(
            f"pass {', '.join(missing)}: they say how the state and the action move the end effector, and "
            "a first calibration of a workspace has no previous version to take them from"
        )
    try:
        return WorkspaceCalibration(box=box, keep_out=list(keep_out), **merged)
    except ValidationError as exc:
        raise CalibrationError(format_errors(WorkspaceCalibration, exc, "workspace")) from None


def _check_indices(workspace: WorkspaceCalibration) -> None:
    for key in ("state_position", "action_position"):
        indices, flag = getattr(workspace, key), f"--{key.replace('_', '-')}"
        if min(indices) < 0:
            raise CalibrationError(
                f"{key} {indices} has a negative index, which would count from the end of the vector and pick "
                f"another entry than meant: pass {flag} with indices of 0 or more"
            )
        if len(set(indices)) != len(indices):
            raise CalibrationError(
                f"{key} {indices} names one index twice, so two axes would read the same entry: pass {flag} "
                "with one distinct index per axis (x, y, z)"
            )


def check_workspace(workspace: WorkspaceCalibration, action_dim: int | None = None) -> SafetyFilter:
    """The safety filter a reader of the workspace file builds; CalibrationError when it could not work.

    Run it before writing: the indices must be distinct and 0 or more, and the action indices
    below `action_dim` when it is given (the length of the robot's action vector). The workspace
    goes through YAML and back first, so the filter is built from what the file will hold.
    """
    _check_indices(workspace)
    if action_dim is not None and max(workspace.action_position) >= action_dim:
        raise CalibrationError(
            f"action_position {workspace.action_position} does not fit the {action_dim}-dim action (--action-dim): "
            f"pass --action-position with indices below {action_dim}"
        )
    as_read = WorkspaceCalibration.model_validate(yaml.safe_load(dump_config(workspace)))
    dim = action_dim if action_dim is not None else max(workspace.action_position) + 1
    return SafetyFilter(SafetyConfig(), action_dim=dim, workspace=as_read)
