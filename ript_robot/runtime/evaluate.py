"""Success-rate evaluation with a confidence interval.

A success rate from n binary trials is reported with its Wilson score interval, which stays
inside [0, 1] and is honest for small n and rates near 0 or 1 (where the normal
approximation is not).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

from ript_robot.config import EvalConfig
from ript_robot.types import Context, Episode


@dataclass
class EvalResult:
    """Success rate over `trials` labeled episodes and its confidence interval."""

    success_rate: float
    successes: int
    trials: int
    ci_low: float
    ci_high: float
    confidence: float
    deterministic: bool

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)

    def __str__(self) -> str:
        mode = "deterministic" if self.deterministic else "sampled"
        return (
            f"success {self.success_rate:.1%} ({self.successes}/{self.trials}, {mode}), "
            f"{self.confidence:.0%} CI [{self.ci_low:.1%}, {self.ci_high:.1%}]"
        )


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    if trials <= 0:
        raise ValueError("a success rate needs at least one trial")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes ({successes}) must lie in [0, trials={trials}]")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def evaluate(
    rollout: Callable[[list[Context], bool], list[Episode]],
    contexts: Sequence[Context],
    config: EvalConfig,
) -> EvalResult:
    """Roll out each context `config.rollouts_per_context` times and count labeled successes."""
    trials = [c for c in contexts for _ in range(config.rollouts_per_context)]
    episodes = rollout(trials, config.deterministic)
    labeled = [e for e in episodes if e.reward is not None]
    if not labeled:
        raise ValueError("no episode came back labeled: evaluation needs an env that reports success")
    successes = sum(int(e.reward == 1.0) for e in labeled)
    low, high = wilson_interval(successes, len(labeled), config.confidence)
    return EvalResult(
        successes / len(labeled), successes, len(labeled), low, high, config.confidence, config.deterministic
    )
