from __future__ import annotations

import numpy as np
import pytest

from ript_robot.config import SafetyConfig
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
