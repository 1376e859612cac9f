"""The control loop's own cost per tick, with the episode writer and the workspace filter in it.

A robot at 30 Hz has 33 ms per tick; the runtime should take a negligible share of it. The
env returns a prepared 224x224 observation and the policy a prepared chunk; the time inside
both is measured and subtracted tick by tick, so what remains is the runtime's work: the loop,
the safety filter with a calibrated workspace box (every command clipped), the step records, and
the episode writer storing every frame to a local store in its background thread (sharing the
GIL, as on the robot). Percentiles are over ticks, not over per-episode means. The same run
without writer and workspace (the loop alone) is reported beside it.

    python benchmarks/runtime_overhead.py [--episodes 20] [--smoke]

Prints the figures and saves benchmarks/results/runtime_overhead.json (--smoke: 2 short episodes, saves nothing).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ript_robot.calibration.models import WorkspaceCalibration
from ript_robot.config import PolicyConfig, RuntimeConfig
from ript_robot.data import EpisodeStore
from ript_robot.envs.base import EnvSpec, RobotEnv, StepResult
from ript_robot.policies.chunked import ChunkedPolicy
from ript_robot.runtime.loop import run_episodes
from ript_robot.runtime.safety import SafetyFilter
from ript_robot.types import ActionChunk, Context, Observation

RESULTS = Path(__file__).parent / "results"
WORKSPACE = WorkspaceCalibration(
    box={"low": [0.2, -0.4, 0.1], "high": [0.8, 0.4, 0.8]},
    state_position=[0, 1, 2],
    action_position=[0, 1, 2],
    metres_per_action=0.005,
    max_command_change=0.5,
)


class TimedEnv(RobotEnv):
    """Returns one prepared 224x224 observation (the arm at a workspace edge); times what it does."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.spec = EnvSpec(cameras={"top": (224, 224)}, state_dim=7, action_dim=7, control_hz=30.0, max_steps=steps)
        state = np.array([0.798, 0.0, 0.5, 0, 0, 0, 0], np.float32)  # 2 mm inside the box's +x face: clipped
        self.obs = Observation({"top": np.full((224, 224, 3), 128, np.uint8)}, state, "benchmark")
        self.inside = 0.0
        self.t = 0

    def reset(self, context: Context) -> Observation:
        self.t = 0
        return self.obs

    def step(self, action: np.ndarray, render: bool = True) -> StepResult:
        t0 = time.perf_counter()
        self.t += 1
        result = StepResult(self.obs, self.t >= self.steps, None)
        self.inside += time.perf_counter() - t0
        return result


class PreparedPolicy(ChunkedPolicy):
    """A real policy object whose act() hands back a prepared chunk (every action beyond the bounds), timed."""

    def __init__(self) -> None:
        super().__init__(PolicyConfig(chunk_size=8, hidden_dim=8, channels=4, keypoints=2), (224, 224), 7, 7)
        self.chunk = ActionChunk(np.full((8, 7), 1.5, np.float32), np.zeros(8, np.float32))
        self.inside = 0.0

    @torch.no_grad()
    def act(self, observations: Sequence[Observation], deterministic: bool = False) -> list[ActionChunk]:
        t0 = time.perf_counter()
        out = [self.chunk for _ in observations]
        self.inside += time.perf_counter() - t0
        return out


def tick_overheads(episodes: int, steps: int, full: bool, folder: Path) -> tuple[list[float], int]:
    """Per-tick runtime time (ms) over `episodes` episodes, and the commands the workspace box clipped;
    full: with the writer and the workspace filter."""
    runtime = RuntimeConfig(execute_steps=8)
    store = EpisodeStore(folder, create=True) if full else None
    writer = store.writer() if store else None
    ticks: list[float] = []
    clipped = 0
    try:
        for i in range(episodes):
            env, policy = TimedEnv(steps), PreparedPolicy()
            safety = SafetyFilter(runtime.safety, 7, workspace=WORKSPACE if full else None)
            last = [time.perf_counter(), 0.0]

            def on_step(_: int, env=env, policy=policy, last=last) -> None:
                now, inside = time.perf_counter(), env.inside + policy.inside
                ticks.append(1000 * (now - last[0] - (inside - last[1])))
                last[0], last[1] = now, inside

            context = Context(f"bench/{i}", "benchmark", i)
            run_episodes([env], [context], policy, runtime, sink=writer, safety=safety, on_step=on_step)
            del ticks[len(ticks) - steps]  # the first tick of an episode also holds its reset and begin
            clipped += safety.counters.workspace
    finally:
        if writer is not None:
            writer.close()
    return ticks, clipped


def percentiles(ticks: list[float]) -> dict[str, float]:
    ms = np.asarray(ticks)
    return {"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=20, help="episodes of 200 ticks per configuration")
    parser.add_argument("--smoke", action="store_true", help="2 episodes of 20 ticks, save nothing (CI)")
    args = parser.parse_args()
    episodes, steps = (2, 20) if args.smoke else (args.episodes, 200)
    scratch = Path(tempfile.mkdtemp(prefix="runtime_overhead_"))
    ticks, clipped = tick_overheads(episodes, steps, True, scratch / "store")
    full, bare = percentiles(ticks), percentiles(tick_overheads(episodes, steps, False, scratch / "unused")[0])
    result = {
        "tick_p50_ms": full["p50_ms"],
        "tick_p99_ms": full["p99_ms"],
        "tick_max_ms": full["max_ms"],
        "loop_alone": bare,
        "ticks": len(ticks),
        "workspace_clips": clipped,
        "note": "per control tick, env and policy time subtracted; one env, a 224x224 camera, every frame "
        "stored by the episode writer, every command clipped by the action bounds and a calibrated workspace box",
    }
    print(
        f"runtime per tick with writer and workspace filter: p50 {full['p50_ms']:.3f} ms, p99 {full['p99_ms']:.3f} ms "
        f"(loop alone: p50 {bare['p50_ms']:.3f} ms, p99 {bare['p99_ms']:.3f} ms)"
    )
    if not args.smoke:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "runtime_overhead.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
