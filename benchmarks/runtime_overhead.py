"""The control loop's own cost per step: loop, safety filter, step record (env and policy excluded).

A robot at 30 Hz has 33 ms per tick; the runtime should take a negligible share of it. The
env here returns a prepared observation and the policy a prepared chunk, and the time spent
inside both is measured and subtracted, so what remains is the runtime's bookkeeping.
Prints the figures and saves benchmarks/results/runtime_overhead.json.

    python benchmarks/runtime_overhead.py
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ript_robot.config import PolicyConfig, RuntimeConfig
from ript_robot.envs.base import EnvSpec, RobotEnv, StepResult
from ript_robot.policies.chunked import ChunkedPolicy
from ript_robot.runtime.loop import run_episodes
from ript_robot.types import ActionChunk, Context, Observation

RESULTS = Path(__file__).parent / "results"
STEPS = 200


class TimedEnv(RobotEnv):
    """Returns one prepared 224x224 observation; accumulates the time spent inside it."""

    def __init__(self) -> None:
        self.spec = EnvSpec(cameras={"top": (224, 224)}, state_dim=7, action_dim=7, control_hz=30.0, max_steps=STEPS)
        self.obs = Observation({"top": np.zeros((224, 224, 3), np.uint8)}, np.zeros(7, np.float32), "benchmark")
        self.inside = 0.0
        self.t = 0

    def reset(self, context: Context) -> Observation:
        t0 = time.perf_counter()
        self.t = 0
        self.inside += time.perf_counter() - t0
        return self.obs

    def step(self, action: np.ndarray) -> StepResult:
        t0 = time.perf_counter()
        self.t += 1
        result = StepResult(self.obs, self.t >= STEPS, None)
        self.inside += time.perf_counter() - t0
        return result


class PreparedPolicy(ChunkedPolicy):
    """A real policy object whose act() hands back a prepared chunk, timed."""

    def __init__(self) -> None:
        super().__init__(PolicyConfig(chunk_size=8, hidden_dim=8, channels=4, keypoints=2), (224, 224), 7, 7)
        self.chunk = ActionChunk(np.full((8, 7), 1.5, np.float32), np.zeros(8, np.float32))  # 1.5: clipped
        self.inside = 0.0

    @torch.no_grad()
    def act(self, observations: Sequence[Observation], deterministic: bool = False) -> list[ActionChunk]:
        t0 = time.perf_counter()
        out = [self.chunk for _ in observations]
        self.inside += time.perf_counter() - t0
        return out


def main(episodes: int = 100) -> dict:
    runtime = RuntimeConfig(execute_steps=8)
    per_step_ms = []
    for i in range(episodes):
        env, policy = TimedEnv(), PreparedPolicy()
        t0 = time.perf_counter()
        run_episodes([env], [Context(f"bench/{i}", "benchmark", i)], policy, runtime)
        total = time.perf_counter() - t0
        per_step_ms.append(1000 * (total - env.inside - policy.inside) / STEPS)
    result = {
        "loop_overhead_median_ms": float(np.median(per_step_ms)),
        "loop_overhead_p99_ms": float(np.percentile(per_step_ms, 99)),
        "steps_per_episode": STEPS,
        "episodes": episodes,
        "note": "per control step, single env, 224x224 camera, safety filter clipping every action",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "runtime_overhead.json").write_text(json.dumps(result, indent=2))
    print(
        f"runtime overhead per step: median {result['loop_overhead_median_ms']:.4f} ms, "
        f"p99 {result['loop_overhead_p99_ms']:.4f} ms (target: median <= 0.2 ms)"
    )
    return result


if __name__ == "__main__":
    main()
