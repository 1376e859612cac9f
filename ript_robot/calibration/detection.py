"""Find the calibration board in camera images: the one detection path every calibration shares.

Checkerboards go through `cv2.findChessboardCorners` and `cv2.cornerSubPix`; ChArUco boards
through `cv2.aruco.CharucoDetector`. A checkerboard's corners are put in one canonical order
(the printed side seen from the front, the square diagonally outside the first corner black),
because OpenCV may return the grid turned by 180 degrees or mirrored, and hand-eye calibration
needs the same board frame in every view.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ript_robot.calibration.models import BoardSpec, CalibrationError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MIN_CHARUCO_CORNERS = 6  # fewer ChArUco corners in a view than this and the view is not used


@dataclass
class BoardDetection:
    """The board found in one image: pixel positions and the matching board-frame points."""

    name: str
    image_points: np.ndarray  # N x 2 float32, pixels
    object_points: np.ndarray  # N x 3 float32, metres, z = 0


def natural_key(name: str) -> tuple[list[str | int], str]:
    """Sort key that orders the numbers in names by value: station_2 before station_10 (the name breaks ties)."""
    parts = re.split(r"(\d+)", name)
    return [int(part) if index % 2 else part for index, part in enumerate(parts)], name


def load_images(paths: Sequence[str | Path]) -> list[tuple[str, np.ndarray]]:
    """Read images as (name, BGR array) in the order given; a folder stands for its image files in natural order.

    Natural order compares the numbers in names by value (station_2, station_10), so unpadded station
    numbers keep the order they were recorded in.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise CalibrationError(f"{path}: no such image file or folder")
        if path.is_dir():
            found = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
            files += sorted(found, key=lambda p: natural_key(p.name))
        else:
            files.append(path)
    if not files:
        raise CalibrationError(f"no images in {', '.join(map(str, paths))}: pass image files or a folder of them")
    images = []
    for file in files:
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise CalibrationError(f"cannot read image {file}: not a file OpenCV can decode")
        images.append((str(file), image))
    return images


def _gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _sample(gray: np.ndarray, point: np.ndarray) -> float:
    """Mean brightness of the 5x5 pixels around a point (clipped to the image)."""
    x = int(np.clip(round(float(point[0])), 2, gray.shape[1] - 3))
    y = int(np.clip(round(float(point[1])), 2, gray.shape[0] - 3))
    return float(gray[y - 2 : y + 3, x - 2 : x + 3].mean())


def _canonical_order(gray: np.ndarray, corners: np.ndarray, pattern: tuple[int, int]) -> np.ndarray:
    """Reorder a detected checkerboard grid so its frame is the same in every view."""
    cols, rows = pattern
    grid = corners.reshape(rows, cols, 2)
    step_x, step_y = grid[0, 1] - grid[0, 0], grid[1, 0] - grid[0, 0]
    if step_x[0] * step_y[1] - step_x[1] * step_y[0] < 0:  # mirrored: the board frame would be left-handed
        grid = grid[:, ::-1]
    origin_square = grid[0, 0] + 0.5 * (grid[0, 0] - grid[1, 1])
    next_square = 0.5 * (grid[0, 0] + grid[0, 1]) + 0.5 * (grid[0, 0] - grid[1, 0])
    if _sample(gray, origin_square) > _sample(gray, next_square):  # the origin square must be the dark one
        grid = grid[::-1, ::-1]
    return np.ascontiguousarray(grid.reshape(-1, 2))


def _detect_checkerboard(gray: np.ndarray, board: BoardSpec) -> np.ndarray | None:
    pattern = board.inner_corners
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK
    found, corners = cv2.findChessboardCorners(gray, pattern, flags=flags)
    if not found:
        return None
    points = corners.reshape(-1, 2)
    spacing = float(np.min(np.linalg.norm(np.diff(points.reshape(pattern[1], pattern[0], 2), axis=1), axis=2)))
    half = int(np.clip(spacing / 3.0, 2, 11))  # the search window must stay inside one square
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3)
    refined = cv2.cornerSubPix(gray, corners.astype(np.float32), (half, half), (-1, -1), criteria)
    return _canonical_order(gray, refined, pattern).astype(np.float32)


def charuco_board(board: BoardSpec) -> cv2.aruco.CharucoBoard:
    """The OpenCV ChArUco board object of a spec (its frame: origin at the board's outer corner)."""
    name = board.dictionary
    if not name.startswith("DICT_") or not hasattr(cv2.aruco, name):
        raise CalibrationError(f"unknown ArUco dictionary {name!r}: use a cv2.aruco name such as DICT_5X5_100")
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))
    return cv2.aruco.CharucoBoard((board.columns, board.rows), board.square_m, board.marker_m, dictionary)


def detect_board(name: str, image: np.ndarray, board: BoardSpec) -> BoardDetection | None:
    """The board in one image, or None where it is not (fully, for a checkerboard) visible."""
    gray = _gray(image)
    if board.kind == "checkerboard":
        corners = _detect_checkerboard(gray, board)
        return None if corners is None else BoardDetection(name, corners, board.object_points())
    charuco = charuco_board(board)
    corners, ids, _, _ = cv2.aruco.CharucoDetector(charuco).detectBoard(gray)
    if ids is None or len(ids) < MIN_CHARUCO_CORNERS or charuco.checkCharucoCornersCollinear(ids):
        return None
    object_points = charuco.getChessboardCorners()[ids.ravel()].astype(np.float32)
    return BoardDetection(name, corners.reshape(-1, 2).astype(np.float32), object_points)


def detect_all(
    images: Sequence[tuple[str, np.ndarray]], board: BoardSpec, skip_undetected: bool = False
) -> tuple[list[BoardDetection], list[str]]:
    """Detect the board in every image: (detections, names of the images without one).

    Without `skip_undetected`, an image without the board is an error that names it.
    """
    detections, missing = [], []
    for name, image in images:
        found = detect_board(name, image, board)
        if found is None:
            missing.append(name)
        else:
            detections.append(found)
    if missing and not skip_undetected:
        what = "all inner corners of the checkerboard" if board.kind == "checkerboard" else "enough ChArUco corners"
        raise CalibrationError(
            f"no board corners found in {len(missing)} of {len(images)} images ({', '.join(missing)}): each view must "
            f"show {what} ({board.columns} x {board.rows} squares as given) with a white border; check the board "
            "flags, retake or remove those images, or pass --skip-undetected to leave them out"
        )
    return detections, missing
