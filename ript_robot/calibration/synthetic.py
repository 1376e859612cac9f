"""Synthetic calibration data with known ground truth, for the tests and the benchmark.

Checkerboard views are rendered as images: every square corner is projected through a known
camera (pinhole plus lens distortion) from a known board pose, moved by Gaussian noise of a
chosen size in pixels, and the squares are filled between the moved corners (anti-aliased),
then blurred and given sensor noise. The calibration code then runs its real detection path
on those images. Hand-eye scenes put the camera on the gripper or in the cell at a known
transform and derive the arm poses that would show the board in each rendered view.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ript_robot.calibration.detection import charuco_board
from ript_robot.calibration.models import ArmPose, BoardSpec, CameraIntrinsics, RecordedPoses, Setup
from ript_robot.calibration.transforms import euler_deg, homogeneous, invert, quaternion_xyzw

# a 640x480 camera with a mildly distorting lens, and a 10 x 7 board of 25 mm squares (9 x 6 inner corners)
CAMERA = CameraIntrinsics(
    camera="synthetic",
    source="checkerboard",
    image_size=[640, 480],
    camera_matrix=[[615.0, 0.0, 322.5], [0.0, 612.0, 238.0], [0.0, 0.0, 1.0]],
    dist_coeffs=[-0.12, 0.06, 0.0008, -0.0005, 0.0],
)
BOARD = BoardSpec(columns=10, rows=7, square_m=0.025)
# where the camera sits in the hand-eye scenes: on the tool flange, or fixed in the cell looking at the arm
EYE_IN_HAND = homogeneous(euler_deg(4.0, -8.0, 90.0), [0.035, -0.05, 0.07])
EYE_TO_HAND = homogeneous(euler_deg(-150.0, 5.0, 100.0), [1.1, 0.35, 0.65])
BOARD_IN_BASE = homogeneous(euler_deg(180.0, 0.0, 30.0), [0.55, -0.05, 0.02])  # eye-in-hand: flat on the table
BOARD_ON_GRIPPER = homogeneous(euler_deg(0.0, 0.0, 15.0), [-0.1, -0.07, 0.06])  # eye-to-hand: held by the gripper


def project(points: np.ndarray, camera: CameraIntrinsics, board_to_camera: np.ndarray) -> np.ndarray:
    """Pixel positions (N x 2) of board-frame points (N x 3) seen from a board pose T_camera_board."""
    rvec, _ = cv2.Rodrigues(board_to_camera[:3, :3])
    pixels, _ = cv2.projectPoints(
        np.asarray(points, np.float64), rvec, board_to_camera[:3, 3], camera.matrix(), camera.distortion()
    )
    return pixels.reshape(-1, 2)


def _outline(board: BoardSpec) -> np.ndarray:
    """Board-frame corners of the printed sheet: the squares plus a white border one square wide."""
    s = board.square_m
    x0, y0, x1, y1 = -2 * s, -2 * s, board.columns * s, board.rows * s
    return np.array([[x0, y0, 0], [x1, y0, 0], [x1, y1, 0], [x0, y1, 0]], np.float64)


def sample_board_poses(
    board: BoardSpec,
    camera: CameraIntrinsics,
    count: int,
    rng: np.random.Generator,
    distance_m: tuple[float, float] = (0.3, 0.55),
    max_tilt_deg: float = 35.0,
    max_roll_deg: float = 30.0,
) -> list[np.ndarray]:
    """`count` board poses T_camera_board with the whole sheet in view, tilted up to `max_tilt_deg` about x and y."""
    width, height = camera.image_size
    k = camera.matrix()
    centre = np.array([(board.columns - 2) * board.square_m / 2, (board.rows - 2) * board.square_m / 2, 0.0])
    poses: list[np.ndarray] = []
    for _ in range(1000 * count):
        rotation = euler_deg(*rng.uniform(-max_tilt_deg, max_tilt_deg, 2), rng.uniform(-max_roll_deg, max_roll_deg))
        pixel = np.array([width, height]) * (0.5 + rng.uniform(-0.25, 0.25, 2))
        ray = np.array([(pixel[0] - k[0, 2]) / k[0, 0], (pixel[1] - k[1, 2]) / k[1, 1], 1.0])
        pose = homogeneous(rotation, ray * rng.uniform(*distance_m) - rotation @ centre)
        corners = project(_outline(board), camera, pose)
        if (corners.min(axis=0) >= 5).all() and (corners.max(axis=0) <= np.array([width, height]) - 6).all():
            poses.append(pose)
            if len(poses) == count:
                return poses
    raise ValueError(f"the board does not fit in a {width}x{height} image at {distance_m} m: move it farther away")


def render_view(
    board: BoardSpec,
    camera: CameraIntrinsics,
    board_to_camera: np.ndarray,
    rng: np.random.Generator,
    corner_noise_px: float = 0.3,
    blur_sigma_px: float = 0.7,
    sensor_noise: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A BGR image of a checkerboard, and the true (noise-free) pixel positions of its inner corners.

    corner_noise_px: standard deviation of the Gaussian shift of every square corner, per axis, in pixels.
    """
    cols, rows, s = board.columns, board.rows, board.square_m
    xs, ys = (np.arange(cols + 1) - 1) * s, (np.arange(rows + 1) - 1) * s
    vertices = np.stack([*np.meshgrid(xs, ys), np.zeros((rows + 1, cols + 1))], axis=-1).reshape(-1, 3)
    true = project(vertices, camera, board_to_camera).reshape(rows + 1, cols + 1, 2)
    moved = true + rng.normal(0.0, corner_noise_px, true.shape)
    width, height = camera.image_size
    image = np.full((height, width), 110, np.uint8)
    shift = 8  # sub-pixel vertex positions: fixed point with 8 fractional bits
    scale = float(1 << shift)
    sheet = np.round(project(_outline(board), camera, board_to_camera) * scale).astype(np.int32)
    cv2.fillConvexPoly(image, sheet, 245, cv2.LINE_AA, shift)
    for r in range(rows):
        for c in range(cols):
            if (r + c) % 2 == 0:  # the square diagonally outside the first inner corner is black
                quad = np.array([moved[r, c], moved[r, c + 1], moved[r + 1, c + 1], moved[r + 1, c]])
                cv2.fillConvexPoly(image, np.round(quad * scale).astype(np.int32), 20, cv2.LINE_AA, shift)
    if blur_sigma_px > 0:
        image = cv2.GaussianBlur(image, (0, 0), blur_sigma_px)
    noisy = image + rng.normal(0.0, sensor_noise, image.shape)
    image = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), true[1:rows, 1:cols].reshape(-1, 2)


def render_views(
    board: BoardSpec,
    camera: CameraIntrinsics,
    poses: list[np.ndarray],
    rng: np.random.Generator,
    corner_noise_px: float = 0.3,
) -> list[tuple[str, np.ndarray]]:
    """Rendered views named view_00, view_01, ... in pose order."""
    return [
        (f"view_{i:02d}", render_view(board, camera, pose, rng, corner_noise_px)[0]) for i, pose in enumerate(poses)
    ]


def render_charuco_view(
    board: BoardSpec, camera: CameraIntrinsics, board_to_camera: np.ndarray, pixels_per_square: int = 60
) -> np.ndarray:
    """A BGR image of a ChArUco board drawn by OpenCV and warped into the view (lens distortion not drawn).

    The board frame is OpenCV's: origin at the board's outer corner, x along the columns, y along the rows.
    """
    margin = pixels_per_square
    size = (board.columns * pixels_per_square + 2 * margin, board.rows * pixels_per_square + 2 * margin)
    texture = charuco_board(board).generateImage(size, marginSize=margin)
    metres = board.square_m / pixels_per_square  # texture pixel -> board plane; pixel centres sit at +0.5
    offset = (0.5 - margin) * metres
    to_board = np.array([[metres, 0.0, offset], [0.0, metres, offset], [0.0, 0.0, 1.0]])
    plane = board_to_camera[:3, [0, 1, 3]]  # board plane (x, y, 1) -> camera
    homography = camera.matrix() @ plane @ to_board
    image = cv2.warpPerspective(texture, homography, tuple(camera.image_size), flags=cv2.INTER_LINEAR, borderValue=110)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)


@dataclass
class HandEyeScene:
    """A hand-eye session with its answer: arm poses, the images taken at them, the true camera transform."""

    setup: Setup
    arm: RecordedPoses  # gripper poses in the base frame, as the arm reports them
    board_to_camera: list[np.ndarray]  # the true board pose of every view
    images: list[tuple[str, np.ndarray]]
    truth: np.ndarray  # T_gripper_camera (eye-in-hand) or T_base_camera (eye-to-hand)


def arm_poses(gripper_to_base: list[np.ndarray]) -> RecordedPoses:
    """4x4 gripper poses as the recorded-poses model the calibration reads."""
    return RecordedPoses(
        poses=[
            ArmPose(position=list(map(float, t[:3, 3])), quaternion=quaternion_xyzw(t[:3, :3])) for t in gripper_to_base
        ]
    )


def gripper_poses(setup: Setup, board_to_camera: list[np.ndarray], truth: np.ndarray) -> list[np.ndarray]:
    """The gripper poses T_base_gripper at which the camera sees the board at each of `board_to_camera`."""
    if setup == "eye_in_hand":  # base <- board <- camera <- gripper
        return [BOARD_IN_BASE @ invert(pose) @ invert(truth) for pose in board_to_camera]
    return [truth @ pose @ invert(BOARD_ON_GRIPPER) for pose in board_to_camera]  # base <- camera <- board <- gripper


def hand_eye_scene(
    setup: Setup,
    count: int,
    rng: np.random.Generator,
    camera: CameraIntrinsics = CAMERA,
    board: BoardSpec = BOARD,
    corner_noise_px: float = 0.3,
) -> HandEyeScene:
    """`count` rendered views of the board and the arm poses they were taken at."""
    truth = EYE_IN_HAND if setup == "eye_in_hand" else EYE_TO_HAND
    views = sample_board_poses(board, camera, count, rng)
    images = render_views(board, camera, views, rng, corner_noise_px)
    return HandEyeScene(setup, arm_poses(gripper_poses(setup, views, truth)), views, images, truth)
