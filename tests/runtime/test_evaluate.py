from __future__ import annotations

import pytest
from conftest import fake_episode

from ript_robot.config import EvalConfig
from ript_robot.runtime.evaluate import EvalResult, evaluate, wilson_interval
from ript_robot.types import Context


@pytest.mark.parametrize(
    ("successes", "trials", "confidence", "low", "high"),
    [
        (0, 10, 0.95, 0.0, 0.2775),
        (5, 10, 0.95, 0.2366, 0.7634),
        (10, 10, 0.95, 0.7225, 1.0),
        (1, 1, 0.95, 0.2065, 1.0),
        (8, 20, 0.95, 0.2188, 0.6134),
        (5, 10, 0.90, 0.2693, 0.7307),
    ],
)
def test_wilson_interval_known_values(successes, trials, confidence, low, high):
    got_low, got_high = wilson_interval(successes, trials, confidence)
    assert got_low == pytest.approx(low, abs=1e-4)
    assert got_high == pytest.approx(high, abs=1e-4)


def test_wilson_interval_properties():
    for n in (1, 7, 40):
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert 0.0 <= low <= high <= 1.0
            assert low <= k / n + 1e-12 and k / n - 1e-12 <= high  # contains the observed rate
            mirror_low, mirror_high = wilson_interval(n - k, n)
            assert low == pytest.approx(1.0 - mirror_high, abs=1e-12)
            assert high == pytest.approx(1.0 - mirror_low, abs=1e-12)
    # more trials, narrower interval; higher confidence, wider interval
    assert (
        wilson_interval(50, 100)[1] - wilson_interval(50, 100)[0]
        < wilson_interval(5, 10)[1] - wilson_interval(5, 10)[0]
    )
    assert wilson_interval(5, 10, 0.99)[1] > wilson_interval(5, 10, 0.95)[1]


@pytest.mark.parametrize(("successes", "trials"), [(0, 0), (1, -1), (-1, 5), (6, 5)])
def test_wilson_interval_rejects_bad_counts(successes, trials):
    with pytest.raises(ValueError):
        wilson_interval(successes, trials)


CONTEXTS = [Context(f"c{i}", "pick up the red block", i) for i in range(4)]


class FakeRollout:
    """Labels rollouts from a fixed reward table; records what it was asked to run."""

    def __init__(self, rewards):
        self.rewards = rewards
        self.calls: list[tuple[list[str], bool]] = []

    def __call__(self, contexts, deterministic):
        self.calls.append(([c.context_id for c in contexts], deterministic))
        return [fake_episode(c, r) for c, r in zip(contexts, self.rewards, strict=True)]


def test_evaluate_counts_labeled_successes():
    rollout = FakeRollout([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, None, 1.0])
    result = evaluate(rollout, CONTEXTS, EvalConfig(rollouts_per_context=2, deterministic=False, confidence=0.9))
    # each context is rolled out twice, consecutively, with the configured mode
    assert rollout.calls == [(["c0", "c0", "c1", "c1", "c2", "c2", "c3", "c3"], False)]
    assert isinstance(result, EvalResult)
    assert result.trials == 7  # the unlabeled rollout is not a trial
    assert result.successes == 4
    assert result.success_rate == pytest.approx(4 / 7)
    assert (result.ci_low, result.ci_high) == pytest.approx(wilson_interval(4, 7, 0.9))
    assert result.confidence == 0.9
    assert result.deterministic is False
    assert result.as_dict()["trials"] == 7
    assert "4/7" in str(result) and "sampled" in str(result) and "90% CI" in str(result)


def test_evaluate_defaults_are_deterministic_single_rollouts():
    rollout = FakeRollout([1.0, 1.0, 1.0, 1.0])
    result = evaluate(rollout, CONTEXTS, EvalConfig())
    assert rollout.calls == [(["c0", "c1", "c2", "c3"], True)]
    assert result.success_rate == 1.0
    assert result.ci_high == 1.0
    assert result.ci_low == pytest.approx(wilson_interval(4, 4)[0])
    assert "deterministic" in str(result)


def test_evaluate_without_labels_raises():
    with pytest.raises(ValueError, match="labeled"):
        evaluate(FakeRollout([None] * 4), CONTEXTS, EvalConfig())
