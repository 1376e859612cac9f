import math

import numpy as np
import pytest

from ript_robot.rl.advantage import is_informative, leave_one_out_advantage


@pytest.mark.parametrize(
    ("rewards", "expected"),
    [
        ([1.0, 0.0], [1.0, -1.0]),
        ([0.0, 1.0], [-1.0, 1.0]),
        ([1.0, 0.0, 0.0, 0.0], [1.0, -1 / 3, -1 / 3, -1 / 3]),
        ([1.0, 1.0, 0.0, 0.0], [2 / 3, 2 / 3, -2 / 3, -2 / 3]),
        ([1.0, 0.0, None, 0.0], [1.0, -0.5, 0.0, -0.5]),
        ([1.0, math.nan, 0.0], [1.0, 0.0, -1.0]),
    ],
)
def test_leave_one_out_hand_worked(rewards, expected):
    np.testing.assert_allclose(leave_one_out_advantage(rewards), expected, atol=1e-12)


@pytest.mark.parametrize("rewards", [[1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0] * 8, [1.0, None, 1.0]])
def test_uniform_group_has_zero_advantage(rewards):
    adv = leave_one_out_advantage(rewards)
    assert adv.shape == (len(rewards),)
    np.testing.assert_array_equal(adv, 0.0)


@pytest.mark.parametrize("rewards", [[], [1.0], [None, None], [1.0, None, None], [None, 0.0]])
def test_fewer_than_two_labeled_gives_zeros(rewards):
    adv = leave_one_out_advantage(rewards)
    assert adv.shape == (len(rewards),)
    np.testing.assert_array_equal(adv, 0.0)


def test_advantages_of_labeled_sum_to_zero():
    rng = np.random.default_rng(0)
    for _ in range(20):
        rewards = rng.integers(0, 2, size=6).astype(float).tolist()
        assert leave_one_out_advantage(rewards).sum() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("rewards", "informative"),
    [
        ([1.0, 0.0], True),
        ([0.0, 0.0, 1.0], True),
        ([1.0, None, 0.0], True),
        ([1.0, 1.0, 1.0], False),
        ([0.0, 0.0], False),
        ([1.0, None, 1.0], False),
        ([None, None], False),
        ([1.0, math.nan], False),
        ([], False),
    ],
)
def test_is_informative(rewards, informative):
    assert is_informative(rewards) is informative
    # informative exactly when some advantage is non-zero
    assert bool(np.any(leave_one_out_advantage(rewards) != 0.0)) is informative
