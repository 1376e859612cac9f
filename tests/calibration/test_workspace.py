"""Workspace calibration: boxes entered by hand or recorded by jogging, enforced by the real safety filter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ript_robot.calibration.models import CalibrationError, load_recorded_poses
from ript_robot.calibration.results import write_versioned
from ript_robot.calibration.workspace import (
    box_from_corners,
    box_from_points,
    check_workspace,
    make_workspace,
    positions,
)
from ript_robot.config import ConfigError, SafetyConfig
from ript_robot.runtime.safety import SafetyFilter

SETTINGS = {"state_position": [0, 1, 2], "action_position": [0, 1, 2], "metres_per_action": 0.01}


def test_a_written_workspace_is_enforced_by_the_safety_filter(tmp_path: Path) -> None:
    box = box_from_corners([0.2, -0.4, 0.0], [0.7, 0.4, 0.5])
    keep_out = [box_from_corners([0.4, -0.1, 0.0], [0.5, 0.1, 0.3])]
    workspace = make_workspace(box, keep_out, SETTINGS, None)
    check_workspace(workspace, action_dim=4)
    path = write_versioned(workspace, tmp_path, "workspace", "arm", "test")
    safety = SafetyFilter(SafetyConfig(workspace=str(path)), action_dim=4)  # x, y, z moves and the gripper
    forward = np.array([1.0, 0.0, 0.0, 1.0], np.float32)
    command, clipped, _ = safety(forward, state=np.array([0.695, 0.0, 0.2, 0.0], np.float32))
    assert clipped and command[0] == pytest.approx(0.5, abs=1e-5) and command[3] == 1.0  # stops at the wall x = 0.7
    command, clipped, _ = safety(forward, state=np.array([0.395, 0.0, 0.1, 0.0], np.float32))
    assert clipped and command[0] == 0.0  # would enter the keep-out box: held
    command, clipped, _ = safety(forward, state=np.array([0.3, 0.0, 0.4, 0.0], np.float32))
    assert not clipped  # above the keep-out box, inside the workspace
    assert safety.counters.workspace == 1 and safety.counters.keep_out == 1


def test_recorded_corners_give_their_bounding_box_shrunk_by_the_margin(tmp_path: Path) -> None:
    corners = tmp_path / "corners.csv"
    corners.write_text("x,y,z\n0.21,-0.39,0.01\n0.69,0.41,0.02\n0.2,0.4,0.49\n0.7,-0.4,0.5\n")
    box = box_from_points(positions(load_recorded_poses(corners)), margin_m=0.02)
    np.testing.assert_allclose(box.low, [0.22, -0.38, 0.03])
    np.testing.assert_allclose(box.high, [0.68, 0.39, 0.48])
    keep_out = box_from_points(np.array([[0.4, -0.1, 0.0], [0.5, 0.1, 0.3]]), margin_m=0.02, keep_out=True)
    np.testing.assert_allclose(keep_out.low, [0.38, -0.12, -0.02])
    np.testing.assert_allclose(keep_out.high, [0.52, 0.12, 0.32])


def test_recorded_corners_that_leave_an_axis_flat_name_it() -> None:
    flat = np.array([[0.2, -0.4, 0.1], [0.7, 0.4, 0.1], [0.2, 0.4, 0.1]])
    with pytest.raises(CalibrationError, match=r"span 0.000 m along z: jog the arm to the lowest and the highest z"):
        box_from_points(flat)
    with pytest.raises(CalibrationError, match=r"span 0.030 m along z, no more than twice the 0.02 m margin"):
        box_from_points(flat + np.array([[0, 0, 0], [0, 0, 0.03], [0, 0, 0]]), margin_m=0.02)
    with pytest.raises(CalibrationError, match="at least 2 recorded corners"):
        box_from_points(flat[:1])
    with pytest.raises(CalibrationError, match="the margin must be 0 m or more"):
        box_from_points(flat + np.array([[0, 0, 0], [0, 0, 0.2], [0, 0, 0]]), margin_m=-0.01)


def test_the_first_calibration_needs_the_axes_and_later_ones_inherit_them() -> None:
    box = box_from_corners([0.2, -0.4, 0.0], [0.7, 0.4, 0.5])
    with pytest.raises(CalibrationError, match="pass --state-position, --action-position, --metres-per-action"):
        make_workspace(box, [], {"state_position": None}, None)
    first = make_workspace(box, [], {**SETTINGS, "frame": "panda_link0", "max_step_m": 0.02}, None)
    smaller = box_from_corners([0.25, -0.3, 0.05], [0.6, 0.3, 0.45])
    second = make_workspace(smaller, [], {"metres_per_action": 0.02}, first)
    assert second.box == smaller and second.frame == "panda_link0" and second.max_step_m == 0.02
    assert second.state_position == [0, 1, 2] and second.metres_per_action == 0.02
    with pytest.raises(CalibrationError, match="the box has 3 axes"):
        make_workspace(box, [], {**SETTINGS, "state_position": [0, 1]}, None)


@pytest.mark.parametrize(
    ("settings", "action_dim", "message"),
    [
        ({"state_position": [0, 1, -1]}, None, r"state_position \[0, 1, -1\] has a negative index.*--state-position"),
        ({"action_position": [0, 1, 1]}, None, r"action_position \[0, 1, 1\] names one index twice.*--action-pos"),
        ({"action_position": [0, 1, 7]}, 7, r"\[0, 1, 7\] does not fit the 7-dim action \(--action-dim\)"),
    ],
)
def test_indices_the_safety_filter_would_misread_are_refused(
    settings: dict[str, list[int]], action_dim: int | None, message: str
) -> None:
    workspace = make_workspace(box_from_corners([0.2, -0.4, 0.0], [0.7, 0.4, 0.5]), [], {**SETTINGS, **settings}, None)
    with pytest.raises(CalibrationError, match=message):
        check_workspace(workspace, action_dim)


def test_a_box_whose_low_corner_is_not_below_the_high_one_is_refused() -> None:
    with pytest.raises(CalibrationError, match=r"low \[0.7, 0.0, 0.0\] must be below high"):
        box_from_corners([0.7, 0.0, 0.0], [0.2, 0.4, 0.5])


def test_malformed_pose_files_name_the_file_and_the_problem(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "poses.yaml"
    bad_yaml.write_text("frame: base_link\nposes:\n  - position: [0.1, 0.2]\n")
    with pytest.raises(ConfigError, match=r"(?s)poses.yaml.*'poses.0.position': List should have at least 3 items"):
        load_recorded_poses(bad_yaml)
    bad_yaml.write_text("poses: [position: [0.1, 0.2, 0.3]\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recorded_poses(bad_yaml)
    bad_csv = tmp_path / "poses.csv"
    bad_csv.write_text("px,py,pz\n0.1,0.2,0.3\n")
    with pytest.raises(CalibrationError, match="header must name columns x,y,z"):
        load_recorded_poses(bad_csv)
    bad_csv.write_text("x,y,z\n0.1,0.2,zero\n")
    with pytest.raises(CalibrationError, match=r"poses.csv, line 2: not a number"):
        load_recorded_poses(bad_csv)


def test_csv_poses_with_orientation_are_read_in_order(tmp_path: Path) -> None:
    path = tmp_path / "stations.csv"
    path.write_text("x,y,z,qx,qy,qz,qw\n0.1,0.2,0.3,0,0,0,1\n0.4,0.5,0.6,0,0,0.7071068,0.7071068\n")
    poses = load_recorded_poses(path).poses
    assert [p.position for p in poses] == [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]
    assert poses[1].quaternion == [0.0, 0.0, 0.7071068, 0.7071068]


def test_positions_in_millimetres_are_refused_as_such(tmp_path: Path) -> None:
    path = tmp_path / "corners.csv"
    path.write_text("x,y,z\n0.25,-0.35,0.02\n650,350,450\n")  # the second corner as the teach pendant shows it
    with pytest.raises(CalibrationError, match=r"corners.csv, line 3: .*864.6 m from the base.*probably millimetres"):
        load_recorded_poses(path)
    path = tmp_path / "stations.yaml"
    path.write_text("poses:\n  - {position: [452, -31, 412], quaternion: [0, 0, 0, 1]}\n")
    with pytest.raises(ConfigError, match=r"(?s)stations.yaml.*poses.0.*probably millimetres \(divide them by 1000\)"):
        load_recorded_poses(path)


def test_a_pose_whose_orientation_is_no_unit_quaternion_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "stations.csv"
    path.write_text("x,y,z,qx,qy,qz,qw\n0.1,0.2,0.3,0.1,1.5,0.2,0\n")  # roll, pitch, yaw typed into the quaternion
    with pytest.raises(
        CalibrationError, match=r"stations.csv, line 2: .*norm 1.517: give a unit quaternion \(x, y, z, w\)"
    ):
        load_recorded_poses(path)


@pytest.mark.parametrize("example", ["handeye_poses.yaml", "workspace_corners.csv"])
def test_the_example_input_files_load(example: str) -> None:
    path = Path(__file__).resolve().parents[2] / "calibration" / "examples" / example
    poses = load_recorded_poses(path).poses
    assert len(poses) >= 3 and all((p.quaternion is not None) == example.startswith("handeye") for p in poses)
