"""Typed calibration inputs and results: the YAML that `ript calibrate` writes and the robot reads.

Every result is a `ConfigModel` (unknown keys are errors, every field documented with units),
so a hand-edited or truncated file fails with the key at fault when it is loaded with
`load_config`. Transforms follow OpenCV and ROS: `T_a_b` maps points in frame b to frame a,
positions in metres, quaternions (x, y, z, w). Workspace results are the runtime's own
`WorkspaceCalibration` (ript_robot.config), so the safety filter reads them unchanged.
"""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from ript_robot.calibration.transforms import pose_matrix
from ript_robot.config import ConfigModel, load_config

Setup = Literal["eye_in_hand", "eye_to_hand"]  # camera on the gripper, or fixed in the cell
# how many lens coefficients OpenCV's pinhole model takes: (k1, k2, p1, p2[, k3[, k4, k5, k6[, s1..s4[, tx, ty]]]])
DIST_COEFF_COUNTS = (4, 5, 8, 12, 14)
# distortion models whose coefficients are OpenCV's pinhole ones: OpenCV's own, the RealSense SDK's brown_conrady
# (k1, k2, p1, p2, k3 in OpenCV's order) and none; other models are usable only with all coefficients zero
OPENCV_DISTORTION_MODELS = ("opencv", "brown_conrady", "none")
MAX_REACH_M = 3.0  # a recorded position farther than this from the base is taken for millimetres


class CalibrationError(ValueError):
    """The calibration input cannot give a trustworthy result; the message names the problem and the fix."""


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second: when a result was computed."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


class BoardSpec(ConfigModel):
    """A printed calibration target: a checkerboard or a ChArUco board, counted in squares."""

    kind: Literal["checkerboard", "charuco"] = Field("checkerboard", description="target type")
    columns: int = Field(ge=3, le=100, description="squares along the board's width (inner corners: columns - 1)")
    rows: int = Field(ge=3, le=100, description="squares along the board's height (inner corners: rows - 1)")
    square_m: float = Field(gt=0.0, le=1.0, description="side of one square as printed, metres")
    marker_m: float | None = Field(None, gt=0.0, description="ChArUco only: side of one ArUco marker, metres")
    dictionary: str = Field("DICT_5X5_100", description="ChArUco only: cv2.aruco predefined dictionary name")

    @model_validator(mode="after")
    def _check_charuco(self) -> BoardSpec:
        if self.kind == "charuco" and (self.marker_m is None or self.marker_m >= self.square_m):
            raise ValueError(f"a ChArUco board needs marker_m below square_m ({self.square_m}), got {self.marker_m}")
        return self

    @property
    def inner_corners(self) -> tuple[int, int]:
        """(columns - 1, rows - 1): OpenCV's pattern size."""
        return self.columns - 1, self.rows - 1

    def object_points(self) -> np.ndarray:
        """Inner corners in the board frame (N x 3, metres, z = 0), row by row as OpenCV orders them."""
        cols, rows = self.inner_corners
        grid = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2) * self.square_m
        return np.hstack([grid, np.zeros((len(grid), 1))]).astype(np.float32)


class CameraIntrinsics(ConfigModel):
    """Pinhole intrinsics and lens distortion of one camera stream: `calibration/intrinsics/<camera>.yaml`."""

    version: int = Field(1, ge=1, description="calibration revision: N of <camera>-vN.yaml")
    camera: str = Field(description="camera name (as in the robot config and the ROS camera topics)")
    source: Literal["checkerboard", "charuco", "realsense"] = Field(description="how the values were obtained")
    image_size: list[int] = Field(min_length=2, max_length=2, description="(width, height) in pixels")
    camera_matrix: list[list[float]] = Field(description="3x3 K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], pixels")
    dist_coeffs: list[float] = Field(
        default_factory=lambda: [0.0] * 5,
        description="OpenCV order (k1, k2, p1, p2[, k3, ...]): 4, 5, 8, 12 or 14 values; zeros: none",
    )
    distortion_model: str = Field(
        "opencv", description="'opencv', or the RealSense SDK's model name (OpenCV reads brown_conrady, or zeros)"
    )
    rms_reprojection_px: float | None = Field(None, ge=0.0, description="RMS reprojection error of the fit, pixels")
    views: int = Field(0, ge=0, description="board views the fit used (0 for values read from a device)")
    board: BoardSpec | None = Field(None, description="the target the fit used")
    serial: str | None = Field(None, description="RealSense only: the device's serial number")
    created: str = Field(default_factory=now_iso, description="when the values were computed (UTC, ISO 8601)")

    @model_validator(mode="after")
    def _check_matrix(self) -> CameraIntrinsics:
        k = np.asarray(self.camera_matrix, dtype=float)
        if k.shape != (3, 3) or k[0, 0] <= 0 or k[1, 1] <= 0:
            raise ValueError(f"camera_matrix must be 3x3 with positive fx and fy, got {self.camera_matrix}")
        if min(self.image_size) <= 0:
            raise ValueError(f"image_size must be positive (width, height), got {self.image_size}")
        if len(self.dist_coeffs) not in DIST_COEFF_COUNTS:
            counts = ", ".join(map(str, DIST_COEFF_COUNTS))
            raise ValueError(
                f"dist_coeffs has {len(self.dist_coeffs)} values, OpenCV takes {counts} (k1, k2, p1, p2[, k3, ...]): "
                "give them all in OpenCV's order, [0, 0, 0, 0, 0] for none"
            )
        return self

    def matrix(self) -> np.ndarray:
        return np.asarray(self.camera_matrix, dtype=np.float64)

    def distortion(self) -> np.ndarray:
        """The coefficients for OpenCV's pinhole functions; CalibrationError when they belong to another model."""
        coeffs = np.asarray(self.dist_coeffs, dtype=np.float64)
        if self.distortion_model not in OPENCV_DISTORTION_MODELS and coeffs.any():
            raise CalibrationError(
                f"camera {self.camera}: distortion_model {self.distortion_model!r} is not OpenCV's pinhole model "
                f"(usable: {', '.join(OPENCV_DISTORTION_MODELS)}, or any model with all coefficients zero), so its "
                f"coefficients {self.dist_coeffs} would be misread: calibrate the camera from board images with "
                "`ript calibrate intrinsics`, which fits OpenCV's model"
            )
        return coeffs


class ArmPose(ConfigModel):
    """One end-effector pose the operator recorded, in the robot base frame."""

    position: list[float] = Field(min_length=3, max_length=3, description="(x, y, z) of the tool frame, metres")
    quaternion: list[float] | None = Field(
        None, min_length=4, max_length=4, description="orientation (x, y, z, w); hand-eye needs it, workspace does not"
    )

    @model_validator(mode="after")
    def _check_pose(self) -> ArmPose:
        reach = float(np.linalg.norm(self.position))
        if reach > MAX_REACH_M:
            raise ValueError(
                f"position {self.position} is {reach:.1f} m from the base, beyond the {MAX_REACH_M:g} m an arm "
                "reaches: positions are metres, and these are probably millimetres (divide them by 1000)"
            )
        norm = float(np.linalg.norm(self.quaternion)) if self.quaternion is not None else 1.0
        if abs(norm - 1.0) > 0.01:
            raise ValueError(f"quaternion {self.quaternion} has norm {norm:.3f}: give a unit quaternion (x, y, z, w)")
        return self


class RecordedPoses(ConfigModel):
    """A file of recorded arm poses: the hand-eye stations, or the corners the arm was jogged to."""

    frame: str = Field("base_link", description="frame the poses are expressed in (the robot base)")
    poses: list[ArmPose] = Field(min_length=1, description="poses in the order they were recorded")


class HandEyeCalibration(ConfigModel):
    """Where a camera sits: on the gripper (eye-in-hand) or fixed beside the arm (eye-to-hand).

    The transform is T_parent_camera: a point p in the camera's optical frame (z forward,
    x right, y down) is at R p + t in the parent frame, which is the gripper's tool frame
    for eye-in-hand and the robot base for eye-to-hand. A ROS static transform publisher
    takes it as is (parent_frame -> camera_frame).
    """

    version: int = Field(1, ge=1, description="calibration revision: N of <name>-vN.yaml")
    setup: Setup = Field(description="camera on the gripper, or fixed in the cell")
    camera: str = Field(description="camera name, from the intrinsics file")
    parent_frame: str = Field(description="tool frame (eye-in-hand) or base frame (eye-to-hand) of the transform")
    camera_frame: str = Field(description="the camera's optical frame")
    translation_m: list[float] = Field(min_length=3, max_length=3, description="t of T_parent_camera, metres")
    quaternion_xyzw: list[float] = Field(min_length=4, max_length=4, description="rotation of T_parent_camera")
    method: str = Field(description="hand-eye method (Park-Martin) and the implementation that ran it")
    poses: int = Field(ge=3, description="arm poses used")
    pairs: int = Field(ge=3, description="pose pairs (motions) in the AX = XB system and the residuals")
    rotation_axis_spread_deg: float = Field(ge=0.0, description="spread of the motions' rotation axes; 0: one axis")
    residual_rot_deg_rms: float = Field(ge=0.0, description="RMS rotation disagreement of AX and XB over pairs, deg")
    residual_rot_deg_max: float = Field(ge=0.0, description="worst pair's rotation disagreement, degrees")
    residual_trans_mm_rms: float = Field(ge=0.0, description="RMS translation disagreement of AX and XB, mm")
    residual_trans_mm_max: float = Field(ge=0.0, description="worst pair's translation disagreement, mm")
    pnp_reprojection_px_rms: float = Field(ge=0.0, description="RMS reprojection of the board poses, pixels")
    intrinsics: str = Field(description="the intrinsics file the board poses were computed with")
    created: str = Field(default_factory=now_iso, description="when the values were computed (UTC, ISO 8601)")

    def transform(self) -> np.ndarray:
        """T_parent_camera as a 4x4 matrix."""
        return pose_matrix(self.translation_m, self.quaternion_xyzw)


def load_recorded_poses(path: str | Path) -> RecordedPoses:
    """Recorded arm poses from YAML (the `RecordedPoses` layout) or CSV (header x,y,z[,qx,qy,qz,qw]; metres).

    Raises ConfigError (YAML) or CalibrationError (CSV) naming the file and what is wrong.
    """
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return load_config(RecordedPoses, path)
    if not path.is_file():
        raise CalibrationError(f"poses file not found: {path}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        if not {"x", "y", "z"} <= set(columns):
            raise CalibrationError(f"{path}: the header must name columns x,y,z (and qx,qy,qz,qw), got {columns}")
        with_orientation = {"qx", "qy", "qz", "qw"} <= set(columns)
        poses = []
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): v for k, v in row.items() if k is not None}
            try:
                position = [float(row[c]) for c in ("x", "y", "z")]
                quaternion = [float(row[c]) for c in ("qx", "qy", "qz", "qw")] if with_orientation else None
            except (TypeError, ValueError) as exc:
                raise CalibrationError(f"{path}, line {line}: not a number in {row}") from exc
            try:
                poses.append(ArmPose(position=position, quaternion=quaternion))
            except ValidationError as exc:
                raise CalibrationError(f"{path}, line {line}: {exc.errors()[0]['msg']}") from None
    if not poses:
        raise CalibrationError(f"{path}: no poses below the header")
    return RecordedPoses(poses=poses)


class Box(ConfigModel):
    """An axis-aligned box in the robot base frame, in metres."""

    low: list[float] = Field(description="lower corner (x, y[, z]), metres")
    high: list[float] = Field(description="upper corner, metres; above `low` on every axis")

    @model_validator(mode="after")
    def _check_corners(self) -> Box:
        if not self.low or len(self.low) != len(self.high):
            raise ValueError(f"low {self.low} and high {self.high} must be non-empty and of equal length")
        if any(lo >= hi for lo, hi in zip(self.low, self.high, strict=True)):
            raise ValueError(f"low {self.low} must be below high {self.high} on every axis")
        return self

    def contains(self, point: Any) -> bool:
        return all(lo <= p <= hi for p, lo, hi in zip(point, self.low, self.high, strict=True))


class WorkspaceCalibration(ConfigModel):
    """Where the end effector may go and how far it may move per step: the calibration YAML.

    Written by hand or by `ript calibrate workspace`; the safety filter reads it. Position
    commands are predicted as state[state_position] + metres_per_action * action[action_position].
    """

    version: int = Field(1, ge=1, description="calibration revision, bumped on every re-calibration")
    frame: str = Field("base_link", description="frame the boxes are expressed in")
    box: Box = Field(description="the end effector stays inside this box")
    keep_out: list[Box] = Field(default_factory=list, description="boxes the end effector must never enter")
    state_position: list[int] = Field(description="indices of the end-effector position (metres) in the state")
    action_position: list[int] = Field(description="indices of the position deltas in the action, same order")
    metres_per_action: float = Field(gt=0.0, description="end-effector displacement per unit action per step")
    max_step_m: float | None = Field(None, gt=0.0, description="largest end-effector move per step, metres")
    max_command_change: float | None = Field(
        None, gt=0.0, description="largest change of any action dimension between consecutive steps"
    )

    @model_validator(mode="after")
    def _check_axes(self) -> WorkspaceCalibration:
        n = len(self.box.low)
        if len(self.state_position) != n or len(self.action_position) != n:
            raise ValueError(
                f"the box has {n} axes: state_position {self.state_position} and "
                f"action_position {self.action_position} must name {n} indices each"
            )
        for k in self.keep_out:
            if len(k.low) != n:
                raise ValueError(f"keep-out box {k.low}..{k.high} must have {n} axes like the workspace box")
        return self


def load_workspace(path: str | Path) -> WorkspaceCalibration:
    """Read a workspace calibration YAML; ConfigError names the file and the key at fault."""
    return load_config(WorkspaceCalibration, path)
