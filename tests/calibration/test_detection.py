"""Board detection on rendered images: corners where they were drawn, in one board frame whatever the view."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ript_robot.calibration import synthetic
from ript_robot.calibration.detection import detect_all, detect_board, load_images
from ript_robot.calibration.models import BoardSpec, CalibrationError
from ript_robot.calibration.transforms import euler_deg, homogeneous

BOARD, CAMERA = synthetic.BOARD, synthetic.CAMERA


def _facing(roll_deg: float, distance_m: float = 0.5) -> np.ndarray:
    """A board pose T_camera_board in front of the camera, tilted a little and turned by `roll_deg`."""
    rotation = euler_deg(10.0, -12.0, roll_deg)
    centre = np.array([(BOARD.columns - 2) * BOARD.square_m / 2, (BOARD.rows - 2) * BOARD.square_m / 2, 0.0])
    return homogeneous(rotation, np.array([0.0, 0.0, distance_m]) - rotation @ centre)


@pytest.mark.parametrize("roll_deg", [0.0, 90.0, 180.0, -90.0])
def test_checkerboard_corners_come_in_the_board_frame_however_the_board_is_turned(roll_deg: float) -> None:
    # OpenCV returns this grid mirrored at some of these turns; the canonical order undoes it
    image, truth = synthetic.render_view(BOARD, CAMERA, _facing(roll_deg), np.random.default_rng(0), 0.0)
    found = detect_board("view", image, BOARD)
    assert found is not None
    assert np.abs(found.image_points - truth).max() < 0.25
    np.testing.assert_array_equal(found.object_points, BOARD.object_points())


def test_charuco_corners_match_their_ids() -> None:
    board = BoardSpec(kind="charuco", columns=8, rows=6, square_m=0.03, marker_m=0.022)
    camera = CAMERA.model_copy(update={"dist_coeffs": [0.0] * 5})
    pose = synthetic.sample_board_poses(board, camera, 1, np.random.default_rng(1))[0]
    found = detect_board("view", synthetic.render_charuco_view(board, camera, pose), board)
    assert found is not None and len(found.image_points) == (board.columns - 1) * (board.rows - 1)
    assert np.abs(synthetic.project(found.object_points, camera, pose) - found.image_points).max() < 0.5


def test_an_image_without_the_board_is_named_and_can_be_skipped() -> None:
    image, _ = synthetic.render_view(BOARD, CAMERA, _facing(0.0), np.random.default_rng(0))
    blank = np.full_like(image, 110)
    with pytest.raises(
        CalibrationError, match=r"no board corners found in 1 of 2 images \(empty.png\).*--skip-undetected"
    ):
        detect_all([("board.png", image), ("empty.png", blank)], BOARD)
    found, skipped = detect_all([("board.png", image), ("empty.png", blank)], BOARD, skip_undetected=True)
    assert [d.name for d in found] == ["board.png"] and skipped == ["empty.png"]


def test_a_board_given_with_the_wrong_size_is_not_found() -> None:
    image, _ = synthetic.render_view(BOARD, CAMERA, _facing(0.0), np.random.default_rng(0))
    wrong = BOARD.model_copy(update={"columns": BOARD.columns + 1})
    assert detect_board("view", image, wrong) is None


def test_a_folder_stands_for_its_images_in_name_order(tmp_path: Path) -> None:
    for name in ("b.png", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    pixel = np.zeros((4, 4, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "b.png"), pixel)
    cv2.imwrite(str(tmp_path / "a.png"), pixel + 9)
    assert [Path(name).name for name, _ in load_images([tmp_path])] == ["a.png", "b.png"]
    (tmp_path / "c.png").write_text("not an image")
    with pytest.raises(CalibrationError, match=r"cannot read image .*c.png"):
        load_images([tmp_path])
    with pytest.raises(CalibrationError, match="missing: no such image file or folder"):
        load_images([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match=r"no images in .*empty"):
        load_images([tmp_path / "empty"])


def test_a_folders_images_come_in_natural_order_so_unpadded_numbers_keep_the_pose_order(tmp_path: Path) -> None:
    for station in (10, 2, 1, 9):
        cv2.imwrite(str(tmp_path / f"station_{station}.png"), np.full((4, 4, 3), station, np.uint8))
    images = load_images([tmp_path])
    assert [Path(name).name for name, _ in images] == [
        "station_1.png",
        "station_2.png",
        "station_9.png",
        "station_10.png",
    ]
    assert [int(image[0, 0, 0]) for _, image in images] == [1, 2, 9, 10]
