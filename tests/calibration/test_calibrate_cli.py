"""`ript calibrate ...` end to end: images and pose files in, versioned YAML and report images out."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ript_robot.calibration import detection, synthetic
from ript_robot.calibration.models import CameraIntrinsics, HandEyeCalibration, load_workspace
from ript_robot.calibration.synthetic import HandEyeScene
from ript_robot.calibration.transforms import transform_error
from ript_robot.cli import main as ript
from ript_robot.config import SafetyConfig, dump_config, load_config
from ript_robot.runtime.safety import SafetyFilter

BOARD_FLAGS = ["--columns", "10", "--rows", "7", "--square-m", "0.025"]


def _write_images(folder: Path, images: list[tuple[str, np.ndarray]]) -> Path:
    folder.mkdir()
    for name, image in images:
        cv2.imwrite(str(folder / f"{name}.png"), image)
    return folder


def test_intrinsics_then_hand_eye_from_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(21)
    views = synthetic.sample_board_poses(synthetic.BOARD, synthetic.CAMERA, 12, rng)
    folder = _write_images(tmp_path / "views", synthetic.render_views(synthetic.BOARD, synthetic.CAMERA, views, rng))
    out = tmp_path / "calibration"
    assert ript(["calibrate", "intrinsics", str(folder), "--camera", "wrist", "--out-dir", str(out), *BOARD_FLAGS]) == 0
    printed = capsys.readouterr().out
    assert "RMS reprojection" in printed and "px (+-: one standard deviation)" in printed
    intrinsics_file = out / "intrinsics" / "wrist.yaml"
    intrinsics = load_config(CameraIntrinsics, intrinsics_file)
    assert intrinsics.version == 1 and intrinsics.views == 12
    assert (out / "intrinsics" / "wrist-v1.png").stat().st_size > 10_000

    scene = synthetic.hand_eye_scene("eye_in_hand", 12, rng)
    images = _write_images(tmp_path / "stations", scene.images)
    poses = tmp_path / "poses.yaml"
    poses.write_text(dump_config(scene.arm))
    command = ["calibrate", "handeye", "--setup", "eye_in_hand", "--poses", str(poses), "--images", str(images)]
    command += ["--intrinsics", str(intrinsics_file), "--out-dir", str(out), *BOARD_FLAGS]
    assert ript(command) == 0
    result = load_config(HandEyeCalibration, out / "handeye" / "wrist.yaml")
    assert (result.parent_frame, result.camera_frame, result.poses) == ("tool0", "wrist_optical_frame", 12)
    rot_deg, trans_mm = transform_error(result.transform(), scene.truth)
    assert rot_deg < 1.0 and trans_mm < 5.0  # with intrinsics calibrated from 12 noisy views
    assert (out / "handeye" / "wrist-v1.png").stat().st_size > 10_000


def test_workspace_from_recorded_corners_then_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corners = tmp_path / "corners.csv"
    corners.write_text("x,y,z\n0.2,-0.4,0.0\n0.7,0.4,0.5\n")
    table = tmp_path / "fixture.yaml"
    table.write_text("poses:\n  - position: [0.4, -0.1, 0.0]\n  - position: [0.5, 0.1, 0.3]\n")
    out = tmp_path / "calibration"
    first = ["calibrate", "workspace", "--name", "arm", "--corners", str(corners), "--margin", "0.01"]
    first += ["--keep-out-corners", str(table), "--state-position", "0", "1", "2", "--action-position", "0", "1", "2"]
    first += ["--metres-per-action", "0.01", "--frame", "panda_link0", "--out-dir", str(out)]
    assert ript(first) == 0
    current = out / "workspace" / "arm.yaml"
    workspace = load_workspace(current)
    assert workspace.box.low == [0.21, -0.39, 0.01] and workspace.keep_out[0].high == [0.51, 0.11, 0.31]
    assert (out / "workspace" / "arm-v1.png").is_file()
    SafetyFilter(SafetyConfig(workspace=str(current)), action_dim=7)  # what the policy node builds

    second = ["calibrate", "workspace", "--name", "arm", "--low", "0.3", "-0.2", "0.05", "--high", "0.6", "0.2", "0.4"]
    assert ript([*second, "--out-dir", str(out)]) == 0
    assert "the previous version had 1 keep-out boxes, this one has 0" in capsys.readouterr().err
    workspace = load_workspace(current)
    assert workspace.version == 2 and workspace.frame == "panda_link0" and workspace.state_position == [0, 1, 2]
    assert load_workspace(out / "workspace" / "arm-v1.yaml").keep_out  # version 1 kept as it was


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["workspace", "--low", "0", "0", "0", "--high", "1", "1", "1", "--corners", "c.csv"], "either by hand"),
        (["workspace", "--low", "0", "0", "0"], "either by hand"),
        (
            ["workspace", "--low", "0", "0", "0", "--high", "1", "1", "1", "--keep-out", "0", "0", "1"],
            "low corner then",
        ),
        (["intrinsics", "missing_folder", *BOARD_FLAGS], "missing_folder: no such image file or folder"),
        (["intrinsics", "x.png", "--columns", "2", "--rows", "7", "--square-m", "0.02"], "'columns'"),
    ],
)
def test_bad_input_fails_with_a_message_and_writes_nothing(
    command: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ript(["calibrate", *command, "--out-dir", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_too_few_views_and_a_malformed_intrinsics_file_fail_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(22)
    views = synthetic.sample_board_poses(synthetic.BOARD, synthetic.CAMERA, 3, rng)
    folder = _write_images(tmp_path / "views", synthetic.render_views(synthetic.BOARD, synthetic.CAMERA, views, rng))
    assert ript(["calibrate", "intrinsics", str(folder), "--out-dir", str(tmp_path), *BOARD_FLAGS]) == 2
    assert "3 usable views of the board; intrinsics need at least 5" in capsys.readouterr().err

    broken = tmp_path / "broken.yaml"
    broken.write_text("camera: wrist\nsource: checkerboard\nimage_size: [640, 480]\ncamera_matrix: [[1, 0], [0, 1]]\n")
    poses = tmp_path / "poses.yaml"
    poses.write_text("poses:\n  - position: [0, 0, 0]\n    quaternion: [0, 0, 0, 1]\n")
    command = ["calibrate", "handeye", "--setup", "eye_to_hand", "--poses", str(poses), "--images", str(folder)]
    assert ript([*command, "--intrinsics", str(broken), *BOARD_FLAGS]) == 2
    assert "broken.yaml" in (err := capsys.readouterr().err) and "camera_matrix must be 3x3" in err


def _hand_eye_session(folder: Path, scene: HandEyeScene, camera: CameraIntrinsics = synthetic.CAMERA) -> list[str]:
    """Files of a rendered session in `folder` (images, poses, intrinsics) and the handeye command line for them."""
    images = _write_images(folder / "stations", scene.images)
    (folder / "poses.yaml").write_text(dump_config(scene.arm))
    (folder / "camera.yaml").write_text(dump_config(camera))
    command = ["calibrate", "handeye", "--poses", str(folder / "poses.yaml"), "--images", str(images)]
    return [*command, "--intrinsics", str(folder / "camera.yaml"), "--out-dir", str(folder / "out"), *BOARD_FLAGS]


def test_a_hand_eye_result_above_the_residual_limits_replaces_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = _hand_eye_session(tmp_path, synthetic.hand_eye_scene("eye_to_hand", 8, np.random.default_rng(23)))
    assert ript([*command, "--setup", "eye_to_hand"]) == 0
    current = tmp_path / "out" / "handeye" / "synthetic.yaml"
    first = current.read_text()
    capsys.readouterr()
    assert ript([*command, "--setup", "eye_in_hand"]) == 2  # the wrong setup: no X closes AX = XB
    err = capsys.readouterr().err
    assert "AX = XB residual RMS" in err and "above the limits 1 deg / 10 mm" in err and "Check --setup" in err
    assert current.read_text() == first
    assert sorted(p.name for p in current.parent.iterdir()) == [
        "synthetic-v1.png",
        "synthetic-v1.yaml",
        "synthetic.yaml",
    ]
    assert ript([*command, "--setup", "eye_in_hand", "--max-residual-deg", "180", "--max-residual-mm", "5000"]) == 0
    assert load_config(HandEyeCalibration, current).setup == "eye_in_hand"  # limits raised: accepted as asked


def test_intrinsics_with_a_distortion_length_opencv_rejects_fail_before_opencv_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scene = synthetic.hand_eye_scene("eye_in_hand", 4, np.random.default_rng(24))
    six = synthetic.CAMERA.model_copy(update={"dist_coeffs": [-0.12, 0.06, 0.0008, -0.0005, 0.0, 0.0]})
    assert ript([*_hand_eye_session(tmp_path, scene, six), "--setup", "eye_in_hand"]) == 2
    err = capsys.readouterr().err
    assert "camera.yaml" in err and "dist_coeffs has 6 values, OpenCV takes 4, 5, 8, 12, 14" in err
    assert not (tmp_path / "out").exists()


def _opencv_fails(*args: object, **kwargs: object) -> None:
    """A real OpenCV error, from a call OpenCV refuses (an empty image)."""
    cv2.cvtColor(np.zeros((0, 0, 3), np.uint8), cv2.COLOR_BGR2GRAY)


def test_an_opencv_error_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    views = synthetic.sample_board_poses(synthetic.BOARD, synthetic.CAMERA, 5, np.random.default_rng(25))
    images = synthetic.render_views(synthetic.BOARD, synthetic.CAMERA, views, np.random.default_rng(25))
    folder = _write_images(tmp_path / "views", images)
    monkeypatch.setattr(detection.cv2, "findChessboardCorners", _opencv_fails)
    assert ript(["calibrate", "intrinsics", str(folder), "--out-dir", str(tmp_path / "out"), *BOARD_FLAGS]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ript calibrate intrinsics: OpenCV failed on this input (OpenCV(") and "cvtColor" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--state-position", "0", "1", "1"], "state_position [0, 1, 1] names one index twice"),
        (["--action-position", "0", "-2", "1"], "action_position [0, -2, 1] has a negative index"),
        (["--action-dim", "2"], "action_position [0, 1, 2] does not fit the 2-dim action (--action-dim)"),
    ],
)
def test_a_workspace_the_safety_filter_would_misread_is_not_written(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["calibrate", "workspace", "--low", "0.3", "-0.2", "0.05", "--high", "0.6", "0.2", "0.4"]
    command += ["--state-position", "0", "1", "2", "--action-position", "0", "1", "2", "--metres-per-action", "0.01"]
    assert ript([*command, *flags, "--out-dir", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
