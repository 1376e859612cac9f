"""Rigid transforms as 4x4 matrices: the one representation the calibration code computes with.

OpenCV hands out rotation vectors, the arm and ROS speak quaternions (x, y, z, w); everything
in between is a homogeneous matrix T_a_b (frame b expressed in frame a), converted here once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.transform import Rotation


def homogeneous(rotation: np.ndarray, translation: Sequence[float] | np.ndarray) -> np.ndarray:
    """4x4 T from a 3x3 rotation matrix and a translation (metres)."""
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return transform


def invert(transform: np.ndarray) -> np.ndarray:
    """T_b_a from T_a_b, without a general matrix inverse."""
    rotation = transform[:3, :3]
    return homogeneous(rotation.T, -rotation.T @ transform[:3, 3])


def pose_matrix(position: Sequence[float], quaternion_xyzw: Sequence[float]) -> np.ndarray:
    """4x4 T from a position and a quaternion (x, y, z, w; normalized here)."""
    return homogeneous(Rotation.from_quat(np.asarray(quaternion_xyzw, dtype=np.float64)).as_matrix(), position)


def quaternion_xyzw(rotation: np.ndarray) -> list[float]:
    """The quaternion (x, y, z, w) of a rotation matrix, with w >= 0."""
    quat = Rotation.from_matrix(rotation).as_quat()
    return [float(q) for q in (quat if quat[3] >= 0 else -quat)]


def from_rotation_vector(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """4x4 T from OpenCV's (rvec, tvec), e.g. the board pose solvePnP returns."""
    return homogeneous(Rotation.from_rotvec(np.asarray(rvec, dtype=np.float64).reshape(3)).as_matrix(), tvec)


def rotation_vector(rotation: np.ndarray) -> np.ndarray:
    """Axis times angle (radians) of a rotation matrix: its logarithm on SO(3)."""
    return Rotation.from_matrix(rotation).as_rotvec()


def rotation_angle_deg(rotation: np.ndarray) -> float:
    """Angle of a rotation matrix, degrees (0 for the identity)."""
    return float(np.degrees(np.linalg.norm(rotation_vector(rotation))))


def euler_deg(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation matrix of extrinsic x, y, z angles in degrees (roll, pitch, yaw about fixed axes)."""
    return Rotation.from_euler("xyz", [rx, ry, rz], degrees=True).as_matrix()


def transform_error(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(rotation error in degrees, translation error in millimetres) of a 4x4 estimate against the truth."""
    rot = rotation_angle_deg(estimate[:3, :3].T @ truth[:3, :3])
    return rot, float(1000.0 * np.linalg.norm(estimate[:3, 3] - truth[:3, 3]))
