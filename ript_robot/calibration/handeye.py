"""Hand-eye calibration: where the camera is relative to the gripper (eye-in-hand) or the base (eye-to-hand).

The arm visits N poses; at each one the camera sees the board, and solvePnP gives the board
pose in the camera. Every pair of poses (i, j) is one motion: A X = X B with A the gripper's
motion, B the camera's and X the unknown camera transform. Eye-to-hand is the same system
with the arm poses inverted (base in gripper), as the OpenCV documentation describes.

The method is Park and Martin (1994): the rotation is the least-squares fit of the motions'
rotation axes on SO(3) (a closed form, taken here by SVD so that it is a proper rotation even
for motions no rotation fits), the translation a linear least-squares fit over all pairs. It
uses every pair rather than consecutive ones, weighs all motions alike, and in OpenCV's own
comparisons it is among the most accurate under noise, where Tsai is more sensitive to small
rotations and Andreff's linear form can leave a non-orthogonal rotation. OpenCV runs it
(`cv2.calibrateHandEye`, CALIB_HAND_EYE_PARK) where the Python bindings have it; the
opencv-python 5.0.0 wheels lack the binding (OpenCV issue #29565, fixed for the next release),
and there the same method runs in numpy below.

Inputs that cannot determine X are refused: fewer than three poses, pose and image counts
that differ, images of another size than the intrinsics', distortion of a model OpenCV's pinhole
functions do not use, motions that barely rotate, or motions that all rotate about (nearly) one
axis (then the rotation about that axis and the offset along it are unknown). A solution whose
AX = XB residual is too large to trust (`check_residuals`) is refused too: the usual causes are
the wrong setup, poses paired with the wrong images, or poses of another frame or unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ript_robot.calibration.detection import BoardDetection, detect_all
from ript_robot.calibration.models import (
    BoardSpec,
    CalibrationError,
    CameraIntrinsics,
    HandEyeCalibration,
    RecordedPoses,
    Setup,
)
from ript_robot.calibration.transforms import (
    from_rotation_vector,
    homogeneous,
    invert,
    pose_matrix,
    quaternion_xyzw,
    rotation_angle_deg,
    rotation_vector,
)

MIN_POSES = 3
MIN_ROTATION_DEG = 5.0  # the largest motion must rotate at least this much
MIN_AXIS_SPREAD_DEG = 5.0  # the motions' rotation axes must spread at least this much


@dataclass
class HandEyeSolution:
    """X and how well it closes AX = XB for every pose pair."""

    transform: np.ndarray  # 4x4 T_gripper_camera (eye-in-hand) or T_base_camera (eye-to-hand)
    pairs: list[tuple[int, int]]
    rot_residual_deg: np.ndarray  # per pair
    trans_residual_mm: np.ndarray  # per pair
    axis_spread_deg: float
    solver: str
    names: list[str] = field(default_factory=list)  # the image of each pose, where known

    def per_pose(self) -> np.ndarray:
        """Poses x 2: the mean (rotation deg, translation mm) residual over the pairs each pose is in."""
        count = max(j for _, j in self.pairs) + 1
        sums, counts = np.zeros((count, 2)), np.zeros(count)
        for (i, j), rot, trans in zip(self.pairs, self.rot_residual_deg, self.trans_residual_mm, strict=True):
            sums[[i, j]] += (rot, trans)
            counts[[i, j]] += 1
        return sums / counts[:, None]

    @property
    def rms(self) -> tuple[float, float]:
        """RMS over the pairs of the (rotation deg, translation mm) residual."""
        return float(np.sqrt(np.mean(self.rot_residual_deg**2))), float(np.sqrt(np.mean(self.trans_residual_mm**2)))


def motion_pairs(
    hand: Sequence[np.ndarray], eye: Sequence[np.ndarray]
) -> list[tuple[tuple[int, int], np.ndarray, np.ndarray]]:
    """((i, j), A_ij, B_ij) for every pose pair, as OpenCV forms them: A = Hg_j^-1 Hg_i, B = Hc_j Hc_i^-1."""
    return [
        ((i, j), invert(hand[j]) @ hand[i], eye[j] @ invert(eye[i]))
        for i in range(len(hand))
        for j in range(i + 1, len(hand))
    ]


def axis_spread_deg(rotation_vectors: np.ndarray) -> tuple[float, np.ndarray]:
    """How far the rotation axes of motions spread, in degrees (0: one axis), and their main axis.

    The axes' scatter matrix is weighted by each motion's angle, so motions too small to
    have a meaningful axis count little; the spread is atan(sqrt(second / first eigenvalue)).
    """
    angles = np.linalg.norm(rotation_vectors, axis=1)
    keep = angles > 1e-9
    axes = rotation_vectors[keep] / angles[keep, None]
    scatter = (axes * angles[keep, None]).T @ axes
    values, vectors = np.linalg.eigh(scatter)
    return float(np.degrees(np.arctan(np.sqrt(max(values[1], 0.0) / values[2])))), vectors[:, 2]


def _check_motions(rotation_vectors: np.ndarray, poses: int) -> float:
    largest = float(np.degrees(np.linalg.norm(rotation_vectors, axis=1).max()))
    if largest < MIN_ROTATION_DEG:
        raise CalibrationError(
            f"the gripper barely rotates between the {poses} poses (largest rotation {largest:.1f} degrees, at least "
            f"{MIN_ROTATION_DEG} needed, 20-40 recommended): tilt the gripper between stations, not only move it"
        )
    spread, axis = axis_spread_deg(rotation_vectors)
    if spread < MIN_AXIS_SPREAD_DEG:
        raise CalibrationError(
            f"all {poses} poses rotate the gripper about (nearly) one axis {np.round(axis, 2).tolist()} (axes spread "
            f"{spread:.1f} degrees, at least {MIN_AXIS_SPREAD_DEG} needed): the rotations lie in one plane, so the "
            "camera's rotation about that axis and its offset along it cannot be found; record poses that also "
            "tilt the gripper about a second, different axis"
        )
    return spread


def park_martin(motions: list[tuple[tuple[int, int], np.ndarray, np.ndarray]]) -> np.ndarray:
    """X from AX = XB: rotation R = (M^T M)^(-1/2) M^T with M = sum b a^T, translation by least squares.

    With M^T = U S V^T that R is U V^T; where det(U V^T) = -1 (motions that no rotation fits, e.g. a
    session solved with the wrong setup) it would be a reflection, and the nearest rotation is taken.
    """
    u, _, vt = np.linalg.svd(
        sum(np.outer(rotation_vector(a[:3, :3]), rotation_vector(b[:3, :3])) for _, a, b in motions)
    )
    rotation = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    lhs = np.vstack([np.eye(3) - a[:3, :3] for _, a, _ in motions])
    rhs = np.concatenate([a[:3, 3] - rotation @ b[:3, 3] for _, a, b in motions])
    translation = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    return homogeneous(rotation, translation)


def solve_hand_eye(
    gripper_to_base: Sequence[np.ndarray],
    board_to_camera: Sequence[np.ndarray],
    setup: Setup,
    use_opencv: bool | None = None,
) -> HandEyeSolution:
    """X from the arm's gripper poses (T_base_gripper) and the board poses in the camera (T_camera_board), in order.

    use_opencv: run cv2.calibrateHandEye (True) or the numpy Park-Martin (False); None: OpenCV's where it exists.
    """
    if len(gripper_to_base) != len(board_to_camera):
        raise CalibrationError(
            f"{len(gripper_to_base)} arm poses but {len(board_to_camera)} board detections: record exactly one image "
            "at every arm pose, in the same order"
        )
    if len(gripper_to_base) < MIN_POSES:
        raise CalibrationError(
            f"{len(gripper_to_base)} poses; hand-eye calibration needs at least {MIN_POSES} (10-20 recommended, "
            "with the gripper tilted about different axes between them)"
        )
    hand = list(gripper_to_base) if setup == "eye_in_hand" else [invert(t) for t in gripper_to_base]
    eye = list(board_to_camera)
    motions = motion_pairs(hand, eye)
    spread = _check_motions(np.array([rotation_vector(a[:3, :3]) for _, a, _ in motions]), len(hand))
    if use_opencv is None:
        use_opencv = hasattr(cv2, "calibrateHandEye")
    if use_opencv:
        rotation, translation = cv2.calibrateHandEye(
            [t[:3, :3] for t in hand],
            [t[:3, 3] for t in hand],
            [t[:3, :3] for t in eye],
            [t[:3, 3] for t in eye],
            method=cv2.CALIB_HAND_EYE_PARK,
        )
        transform, solver = homogeneous(rotation, translation), "Park-Martin (cv2.calibrateHandEye)"
        if np.linalg.det(rotation) < 0:  # OpenCV's closed form is a reflection for motions no rotation fits
            transform, solver = park_martin(motions), "Park-Martin (numpy; cv2.calibrateHandEye gave a reflection)"
    else:
        why = "" if hasattr(cv2, "calibrateHandEye") else "; this OpenCV lacks cv2.calibrateHandEye"
        transform, solver = park_martin(motions), f"Park-Martin (numpy{why})"
    rot, trans = [], []
    for _, a, b in motions:
        left, right = a @ transform, transform @ b
        rot.append(rotation_angle_deg(left[:3, :3].T @ right[:3, :3]))
        trans.append(1000.0 * float(np.linalg.norm(left[:3, 3] - right[:3, 3])))
    return HandEyeSolution(transform, [p for p, _, _ in motions], np.array(rot), np.array(trans), spread, solver)


def check_residuals(solution: HandEyeSolution, max_rot_deg: float, max_trans_mm: float) -> None:
    """CalibrationError when the AX = XB residual RMS is above the limits, naming the pose that fits worst.

    The CLI's defaults (1 deg, 10 mm) are 4-5 times what rendered sessions with 0.3 px corner noise give.
    """
    rot_rms, trans_rms = solution.rms
    if rot_rms <= max_rot_deg and trans_rms <= max_trans_mm:
        return
    per_pose = solution.per_pose()
    worst = int(np.argmax(per_pose[:, 0] / max_rot_deg + per_pose[:, 1] / max_trans_mm))
    which = f"the one of {Path(solution.names[worst]).name}" if solution.names else f"number {worst} (from 0)"
    raise CalibrationError(
        f"AX = XB residual RMS {rot_rms:.2f} deg / {trans_rms:.1f} mm is above the limits {max_rot_deg:g} deg / "
        f"{max_trans_mm:g} mm (--max-residual-deg, --max-residual-mm), so the result is refused. The pose that fits "
        f"worst is {which}, off by {per_pose[worst, 0]:.2f} deg / {per_pose[worst, 1]:.1f} mm on average over its "
        "pairs. Check --setup, that image i was taken at pose i, that the poses are the tool frame's in metres, and "
        "the intrinsics and board flags; retake or leave out bad poses, or raise the limits for an arm known to be "
        "this imprecise"
    )


def _check_intrinsics(intrinsics: CameraIntrinsics, images: Sequence[tuple[str, np.ndarray]]) -> None:
    """The intrinsics must be of the images' stream (same size) and of a distortion model OpenCV's PnP reads."""
    intrinsics.distortion()  # CalibrationError for coefficients of a model that is not OpenCV's pinhole one
    width, height = intrinsics.image_size
    other = [
        f"{Path(name).name} {image.shape[1]}x{image.shape[0]}"
        for name, image in images
        if (image.shape[1], image.shape[0]) != (width, height)
    ]
    if other:
        listed = ", ".join(other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
        raise CalibrationError(
            f"{len(other)} of {len(images)} images are not {width}x{height}, the size the intrinsics of camera "
            f"{intrinsics.camera} were calibrated at: {listed}. Intrinsics hold for one stream resolution only: "
            f"take the images at {width}x{height}, or calibrate intrinsics at this resolution and pass that file"
        )


def board_poses(detections: Sequence[BoardDetection], intrinsics: CameraIntrinsics) -> tuple[list[np.ndarray], float]:
    """T_camera_board of every detection (planar PnP, refined), and the RMS reprojection error in pixels."""
    k, dist = intrinsics.matrix(), intrinsics.distortion()
    poses, squared = [], []
    for d in detections:
        ok, rvec, tvec = cv2.solvePnP(d.object_points, d.image_points, k, dist, flags=cv2.SOLVEPNP_IPPE)
        if not ok:
            raise CalibrationError(f"no board pose for {d.name}: the detected corners do not fit the board")
        rvec, tvec = cv2.solvePnPRefineLM(d.object_points, d.image_points, k, dist, rvec, tvec)
        projected = cv2.projectPoints(d.object_points, rvec, tvec, k, dist)[0].reshape(-1, 2)
        squared.append(np.sum((projected - d.image_points) ** 2, axis=1))
        poses.append(from_rotation_vector(rvec, tvec))
    return poses, float(np.sqrt(np.mean(np.concatenate(squared))))


def calibrate_hand_eye(
    arm: RecordedPoses,
    images: Sequence[tuple[str, np.ndarray]],
    board: BoardSpec,
    intrinsics: CameraIntrinsics,
    intrinsics_path: str,
    setup: Setup,
    parent_frame: str,
    camera_frame: str,
    skip_undetected: bool = False,
) -> tuple[HandEyeCalibration, HandEyeSolution]:
    """The camera transform from recorded arm poses and the images taken at them (image i at pose i)."""
    if len(arm.poses) != len(images):
        raise CalibrationError(
            f"{len(arm.poses)} arm poses but {len(images)} images: record exactly one image at every arm pose, "
            "in the same order (a folder's images are taken in natural name order: station_2 before station_10)"
        )
    missing = [i for i, pose in enumerate(arm.poses) if pose.quaternion is None]
    if missing:
        raise CalibrationError(f"arm poses {missing} have no quaternion: hand-eye calibration needs the orientation")
    if board.kind == "checkerboard" and (board.columns + board.rows) % 2 == 0:
        raise CalibrationError(
            f"a {board.columns} x {board.rows} checkerboard looks the same turned by 180 degrees, so its frame is "
            "ambiguous: use one with an odd and an even number of squares (e.g. 10 x 7), or a ChArUco board"
        )
    _check_intrinsics(intrinsics, images)
    detections, skipped = detect_all(images, board, skip_undetected)
    if len(detections) < MIN_POSES:
        raise CalibrationError(
            f"the board was found in {len(detections)} of {len(images)} images; hand-eye calibration needs at "
            f"least {MIN_POSES} poses with the board in view (10-20 recommended)"
        )
    undetected = set(skipped)
    used = [i for i, (name, _) in enumerate(images) if name not in undetected]
    gripper = [pose_matrix(arm.poses[i].position, arm.poses[i].quaternion) for i in used]
    cameras, pnp_rms = board_poses(detections, intrinsics)
    solution = solve_hand_eye(gripper, cameras, setup)
    solution.names = [d.name for d in detections]
    x, (rot_rms, trans_rms) = solution.transform, solution.rms
    result = HandEyeCalibration(
        setup=setup,
        camera=intrinsics.camera,
        parent_frame=parent_frame,
        camera_frame=camera_frame,
        translation_m=[float(v) for v in x[:3, 3]],
        quaternion_xyzw=quaternion_xyzw(x[:3, :3]),
        method=solution.solver,
        poses=len(used),
        pairs=len(solution.pairs),
        rotation_axis_spread_deg=solution.axis_spread_deg,
        residual_rot_deg_rms=rot_rms,
        residual_rot_deg_max=float(solution.rot_residual_deg.max()),
        residual_trans_mm_rms=trans_rms,
        residual_trans_mm_max=float(solution.trans_residual_mm.max()),
        pnp_reprojection_px_rms=pnp_rms,
        intrinsics=intrinsics_path,
    )
    return result, solution
