"""LIBERO throughput: raw LIBERO against our loop, which renders only what the policy and the log need.

All figures come from one run on this machine (libero_spatial task 0, two 128x128 cameras):
- physics_steps_s: LiberoEnv stepping without rendering (the ceiling of any loop);
- render_every_step_steps_s: LIBERO as it comes (OffScreenRenderEnv, both cameras rendered
  with shadows at every step, as its datasets and evaluations do);
- loop_steps_s: our runtime (`run_episodes`) with the light policy planning chunks of 8
  from both cameras, the safety filter, and every episode written to an episode store;
  frames rendered only when the policy re-plans and the log keeps one (`--frame-every`);
- speedup: loop_steps_s / render_every_step_steps_s;
- workers_1_steps_s, workers_2_steps_s, workers_2_speedup: the same loop with the simulators
  in one and in two worker processes (two contexts in lock step for two workers).

    python benchmarks/libero_throughput.py [--steps 120] [--frame-every 0]

Prints the figures and saves benchmarks/results/libero_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ript_robot.config import PolicyConfig, RuntimeConfig
from ript_robot.data import EpisodeStore
from ript_robot.policies import make_policy
from ript_robot.runtime.loop import run_episodes
from sim_bridge.libero_env import LiberoEnv, libero_contexts, task_suite
from sim_bridge.workers import WorkerEnv

RESULTS = Path(__file__).parent / "results"
SUITE, TASK, SIZE = "libero_spatial", 0, 128


def raw_libero_steps_s(steps: int) -> float:
    """LIBERO's own env, cameras rendered at every step (its defaults: shadows and reflections on)."""
    suite = task_suite(SUITE)  # configures LIBERO first: importing it unconfigured prompts on stdin
    from libero.libero.envs import OffScreenRenderEnv

    env = OffScreenRenderEnv(
        bddl_file_name=suite.get_task_bddl_file_path(TASK), camera_heights=SIZE, camera_widths=SIZE
    )
    env.seed(0)
    env.reset()
    env.set_init_state(suite.get_task_init_states(TASK)[0])
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for _ in range(steps):
        obs, *_ = env.step(rng.uniform(-0.3, 0.3, 7))
    elapsed = time.perf_counter() - started
    assert obs["agentview_image"].shape == (SIZE, SIZE, 3)
    env.close()
    return steps / elapsed


def physics_steps_s(env: LiberoEnv, steps: int) -> float:
    env.reset(libero_contexts(SUITE, [TASK], [0])[0])
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for _ in range(steps):
        env.step(rng.uniform(-0.3, 0.3, 7), render=False)
    return steps / (time.perf_counter() - started)


def loop_steps_s(envs: list, policy, runtime: RuntimeConfig, store: EpisodeStore, inits: list[int]) -> float:
    """Steps per second (all envs together) of whole episodes through the runtime into the store."""
    contexts = libero_contexts(SUITE, [TASK], inits)
    with store.writer() as writer:
        started = time.perf_counter()
        episodes = run_episodes(envs, contexts, policy, runtime, writer, robot_id="benchmark")
        elapsed = time.perf_counter() - started
    return sum(e.meta.num_steps for e in episodes) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=120, help="steps per measurement (and episode length)")
    parser.add_argument("--frame-every", type=int, default=0, help="episode log keeps every N-th frame (0: plans)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runtime = RuntimeConfig(execute_steps=8, frame_every=args.frame_every)
    make = partial(LiberoEnv, SUITE, image_size=SIZE, max_steps=args.steps)
    store = EpisodeStore(Path(tempfile.mkdtemp(prefix="libero_throughput_")) / "store")

    print("raw LIBERO, both cameras rendered every step ...", flush=True)
    raw = raw_libero_steps_s(max(20, args.steps // 3))
    env = make()
    policy = make_policy(PolicyConfig(chunk_size=8), env.spec)
    print("physics only ...", flush=True)
    physics = physics_steps_s(env, args.steps)
    print("our loop, in process ...", flush=True)
    loop = loop_steps_s([env], policy, runtime, store, [0])
    env.close()
    print("our loop, simulators in 1 and 2 worker processes ...", flush=True)
    workers = {}
    for n in (1, 2):
        envs = [WorkerEnv(make, f"{SUITE}-{i}") for i in range(n)]
        try:
            for w in envs:  # load the task's scene first, as the in-process env did before its measurement
                w.reset(libero_contexts(SUITE, [TASK], [0])[0])
            workers[n] = loop_steps_s(envs, policy, runtime, store, list(range(1, n + 1)))
        finally:
            for w in envs:
                w.close()
    result = {
        "physics_steps_s": physics,
        "render_every_step_steps_s": raw,
        "loop_steps_s": loop,
        "speedup": loop / raw,
        "physics_ceiling_share": loop / physics,
        "workers_1_steps_s": workers[1],
        "workers_2_steps_s": workers[2],
        "workers_2_speedup": workers[2] / workers[1],
        "task": f"{SUITE} task {TASK}",
        "cameras": f"agentview + wrist, {SIZE}x{SIZE}",
        "chunk": 8,
        "frame_every": args.frame_every,
        "steps_per_measurement": args.steps,
        "policy": "ChunkedPolicy defaults, two cameras, 1 torch thread",
        "note": "raw: OffScreenRenderEnv defaults (shadows, reflections); ours: no shadows, frames on re-plan "
        "and for the log only; loop and workers figures include the policy, safety filter and store writer",
        "machine": f"{os.cpu_count()} CPU cores, no GPU, Mesa software rendering (EGL)",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "libero_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
