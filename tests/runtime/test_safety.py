from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ript_robot.calibration.models import WorkspaceCalibration, load_workspace
from ript_robot.config import ConfigError, SafetyConfig
from ript_robot.runtime.safety import SafetyFilter


def test_out_of_bound_actions_are_clipped_and_counted():
    safety = SafetyFilter(SafetyConfig(), action_dim=3)
    command, clipped, fault = safety(np.array([2.0, -3.0, 0.5], dtype=np.float32))
    np.testing.assert_array_equal(command, np.array([1.0, -1.0, 0.5], dtype=np.float32))
    assert command.dtype == np.float32
    assert clipped is True and fault is False
    command, clipped, fault = safety(np.array([0.25, -0.5, 1.0], dtype=np.float32))
    np.testing.assert_array_equal(command, [0.25, -0.5, 1.0])
    assert clipped is False and fault is False
    assert safety.counters.commands == 2
    assert safety.counters.clipped == 1
    assert safety.counters.faults == 0


def test_custom_bounds():
    safety = SafetyFilter(SafetyConfig(action_low=-0.5, action_high=0.25), action_dim=2)
    command, clipped, _ = safety(np.array([-1.0, 1.0], dtype=np.float32))
    np.testing.assert_array_equal(command, [-0.5, 0.25])
    assert clipped


def test_disabled_filter_passes_actions_through():
    safety = SafetyFilter(SafetyConfig(enabled=False), action_dim=3)
    action = np.array([2.0, -3.0, 0.5], dtype=np.float32)
    command, clipped, fault = safety(action)
    np.testing.assert_array_equal(command, action)
    assert clipped is False and fault is False
    assert command is not action  # a copy: later edits of the chunk do not change what was sent
    assert safety.counters.clipped == 0


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_action_holds_and_faults(enabled, bad):
    safety = SafetyFilter(SafetyConfig(enabled=enabled), action_dim=3)
    command, clipped, fault = safety(np.array([0.1, bad, 0.2], dtype=np.float32))
    np.testing.assert_array_equal(command, np.zeros(3))
    assert fault is True and clipped is False
    assert safety.counters.faults == 1
    command[:] = 5.0  # the hold command handed out is a copy
    np.testing.assert_array_equal(safety.hold, np.zeros(3))


def test_wrong_shape_and_bad_dim_raise():
    safety = SafetyFilter(SafetyConfig(), action_dim=3)
    with pytest.raises(ValueError, match="shape"):
        safety(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="action_dim"):
        SafetyFilter(SafetyConfig(), action_dim=0)


def _workspace(**overrides) -> WorkspaceCalibration:
    fields = {
        "box": {"low": [0.0, 0.0], "high": [1.0, 1.0]},
        "state_position": [0, 1],
        "action_position": [0, 1],
        "metres_per_action": 0.1,
    }
    return WorkspaceCalibration.model_validate({**fields, **overrides})


def test_workspace_box_stops_the_arm_at_the_wall_and_lets_it_back_in():
    safety = SafetyFilter(SafetyConfig(), action_dim=3, workspace=_workspace())
    state = np.array([0.95, 0.5, 0.0], dtype=np.float32)
    command, clipped, _ = safety(np.array([1.0, 0.5, 1.0], dtype=np.float32), state)
    np.testing.assert_allclose(command, [0.5, 0.5, 1.0], atol=1e-6)  # 0.05 m to the wall: half a step
    assert clipped and safety.counters.workspace == 1
    outside = np.array([1.02, 0.5, 0.0], dtype=np.float32)  # bumped out: may come back, never go further
    command, clipped, _ = safety(np.array([-0.3, 0.0, 0.0], dtype=np.float32), outside)
    np.testing.assert_allclose(command, [-0.3, 0.0, 0.0])
    assert not clipped
    command, clipped, _ = safety(np.array([0.3, 0.0, 0.0], dtype=np.float32), outside)
    np.testing.assert_allclose(command, [0.0, 0.0, 0.0])
    assert clipped


def test_keep_out_box_holds_the_position_part():
    ws = _workspace(keep_out=[{"low": [0.4, 0.4], "high": [0.6, 0.6]}])
    safety = SafetyFilter(SafetyConfig(), action_dim=3, workspace=ws)
    command, clipped, _ = safety(np.array([1.0, 0.0, 1.0], dtype=np.float32), np.array([0.35, 0.5, 0.0]))
    np.testing.assert_allclose(command, [0.0, 0.0, 1.0])  # the gripper dimension is untouched
    assert clipped and safety.counters.keep_out == 1


def test_per_step_distance_and_rate_limits():
    ws = _workspace(max_step_m=0.05, max_command_change=0.5)
    safety = SafetyFilter(SafetyConfig(), action_dim=3, workspace=ws)
    state = np.array([0.5, 0.5, 0.0], dtype=np.float32)
    command, _, _ = safety(np.array([0.6, 0.8, 0.0], dtype=np.float32), state)
    np.testing.assert_allclose(np.linalg.norm(command[:2]) * 0.1, 0.05, rtol=1e-5)  # direction kept, 5 cm
    np.testing.assert_allclose(command[:2] / np.linalg.norm(command[:2]), [0.6, 0.8], rtol=1e-5)
    command, _, _ = safety(np.array([0.0, 0.0, 1.0], dtype=np.float32), state, previous=np.zeros(3))
    assert command[2] == pytest.approx(0.5)  # the gripper may change by at most 0.5 per step
    assert safety.counters.step == 1 and safety.counters.rate == 1 and safety.counters.clipped == 2


def test_workspace_calibration_yaml_is_validated_with_clear_errors(tmp_path):
    path = tmp_path / "workspace.yaml"
    path.write_text(
        "box: {low: [0, 0], high: [1, 1]}\nstate_position: [0]\naction_position: [0, 1]\nmetres_per_action: 0.1\n"
    )
    with pytest.raises(ConfigError, match=r"(?s)workspace.yaml.*2 axes"):
        SafetyFilter(SafetyConfig(workspace=str(path)), action_dim=3)
    path.write_text("box: {low: [0, 1], high: [1, 0.5]}\nstate_position: [0, 1]\naction_position: [0, 1]\n")
    with pytest.raises(ConfigError, match="must be below high"):
        load_workspace(path)
    with pytest.raises(ConfigError, match="not found"):
        load_workspace(tmp_path / "missing.yaml")


def test_the_shipped_sim_workspace_loads_and_fits_the_builtin_task():
    path = Path(__file__).parents[2] / "calibration" / "sim_pick_workspace.yaml"
    ws = load_workspace(path)
    safety = SafetyFilter(SafetyConfig(workspace=str(path)), action_dim=3)
    assert safety.workspace == ws
    with pytest.raises(ValueError, match="state"):
        safety(np.zeros(3, dtype=np.float32))  # workspace limits need the arm's state
