"""LIBERO throughput: our loop against raw LIBERO at equal rendering, and what rendering on demand saves.

All figures come from one run on this machine (libero_spatial task 0, two 128x128 cameras):
- physics_steps_s: LiberoEnv stepping without rendering (the ceiling of any loop);
- render_every_step_steps_s: LIBERO as it comes (OffScreenRenderEnv, both cameras rendered
  with shadows at every step, as its datasets and evaluations do);
- loop_same_rendering_steps_s: our runtime (`run_episodes`: the light policy planning chunks of
  8 from both cameras, the safety filter, every episode and every frame written to a store)
  rendering what raw LIBERO renders: both cameras, every step, shadows on;
- same_rendering_speedup: loop_same_rendering / raw: the loop itself, rendering held equal;
- loop_on_demand_shadows_steps_s: the same loop rendering only the frames the policy plans from
  and the log keeps (`--frame-every`), shadows still on;
- render_on_demand_speedup: loop_on_demand_shadows / loop_same_rendering: rendering skipped;
- loop_steps_s: the default loop (on demand, no shadows); shadows_off_speedup: it over
  loop_on_demand_shadows; combined_speedup: it over raw LIBERO (all of the above together);
- workers_1_steps_s, workers_2_steps_s, workers_2_speedup: the default loop with the simulators
  in one and in two worker processes (two contexts in lock step for two workers).

    python benchmarks/libero_throughput.py [--steps 120] [--frame-every 0] [--smoke]

Prints the figures and saves benchmarks/results/libero_throughput.json (--smoke: 16 steps, no
worker processes, saves nothing).
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
    parser.add_argument("--smoke", action="store_true", help="16 steps, no worker processes, save nothing (CI)")
    args = parser.parse_args()
    steps = 16 if args.smoke else args.steps
    torch.set_num_threads(1)
    runtime = RuntimeConfig(execute_steps=8, frame_every=args.frame_every)
    every_frame = RuntimeConfig(execute_steps=8, frame_every=1)  # both cameras rendered and stored every step
    make = partial(LiberoEnv, SUITE, image_size=SIZE, max_steps=steps)
    store = EpisodeStore(Path(tempfile.mkdtemp(prefix="libero_throughput_")) / "store")

    print("raw LIBERO, both cameras rendered every step ...", flush=True)
    raw = raw_libero_steps_s(max(16, steps // 3))
    shadowed = make(shadows=True)
    policy = make_policy(PolicyConfig(chunk_size=8), shadowed.spec)
    print("our loop rendering as raw LIBERO does, then on demand, shadows on ...", flush=True)
    same = loop_steps_s([shadowed], policy, every_frame, store, [0])
    on_demand_shadows = loop_steps_s([shadowed], policy, runtime, store, [0])
    shadowed.close()
    env = make()
    print("physics only, then the default loop ...", flush=True)
    physics = physics_steps_s(env, steps)
    loop = loop_steps_s([env], policy, runtime, store, [0])
    env.close()
    workers = {}
    for n in () if args.smoke else (1, 2):
        print(f"the default loop, simulators in {n} worker process(es) ...", flush=True)
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
        "loop_same_rendering_steps_s": same,
        "same_rendering_speedup": same / raw,
        "loop_on_demand_shadows_steps_s": on_demand_shadows,
        "render_on_demand_speedup": on_demand_shadows / same,
        "loop_steps_s": loop,
        "shadows_off_speedup": loop / on_demand_shadows,
        "combined_speedup": loop / raw,
        "physics_ceiling_share": loop / physics,
        "workers_1_steps_s": workers.get(1),
        "workers_2_steps_s": workers.get(2),
        "workers_2_speedup": workers[2] / workers[1] if workers else None,
        "task": f"{SUITE} task {TASK}",
        "cameras": f"agentview + wrist, {SIZE}x{SIZE}",
        "chunk": 8,
        "frame_every": args.frame_every,
        "steps_per_measurement": steps,
        "policy": "ChunkedPolicy defaults, two cameras, 1 torch thread",
        "note": "raw: OffScreenRenderEnv defaults (shadows, reflections), both cameras every step; every loop "
        "figure includes the policy, the safety filter and the store writer",
        "machine": f"{os.cpu_count()} CPU cores, no GPU, Mesa software rendering (EGL)",
    }
    print(json.dumps(result, indent=2))
    if not args.smoke:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "libero_throughput.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
