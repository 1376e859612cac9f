"""Success of the scripted LIBERO experts on each task of libero_spatial and libero_object.

Each task's expert runs from the benchmark's fixed initial states (the first `--inits` of
50), physics only (the expert needs no pictures), within the suite's step limit; success
is the simulator's goal check, as in LIBERO's evaluations. Tasks are spread over
`--processes` worker processes.

    python benchmarks/libero_experts.py [--inits 10] [--processes 2] [--smoke]

Prints a table and saves benchmarks/results/libero_experts.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SUITES = ("libero_spatial", "libero_object")


def run_task(job: tuple[str, int, int]) -> dict:
    """One task's expert over its first `inits` initial states (in a worker process)."""
    from ript_robot.envs.demos import record_demonstrations
    from sim_bridge.libero_env import LiberoEnv, libero_contexts
    from sim_bridge.libero_expert import LiberoExpert

    suite, task, inits = job
    env = LiberoEnv(suite, image_size=64)
    started = time.perf_counter()
    contexts = libero_contexts(suite, [task], list(range(inits)))
    demos = record_demonstrations(env, contexts, LiberoExpert(), successful_only=False, frame_every=10_000)
    env.close()
    successes = [bool(d.meta.label and d.meta.label.success) for d in demos]
    return {
        "suite": suite,
        "task": task,
        "instruction": contexts[0].instruction,
        "success": sum(successes) / len(successes),
        "episodes": len(successes),
        "failed_inits": [i for i, ok in enumerate(successes) if not ok],
        "mean_steps_success": sum(d.meta.num_steps for d, ok in zip(demos, successes, strict=True) if ok)
        / max(1, sum(successes)),
        "wall_s": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inits", type=int, default=10, help="initial states per task (of 50)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    parser.add_argument("--smoke", action="store_true", help="task 0 of each suite, one initial state, save nothing")
    args = parser.parse_args()
    tasks, args.inits = (range(1), 1) if args.smoke else (range(10), args.inits)
    jobs = [(suite, task, args.inits) for suite in SUITES for task in tasks]
    started = time.perf_counter()
    with mp.get_context("spawn").Pool(args.processes) as pool:
        rows = []
        for row in pool.imap_unordered(run_task, jobs):
            rows.append(row)
            print(
                f"{row['suite']:15} task {row['task']}: {row['success']:.0%} of {row['episodes']}  {row['instruction']}"
            )
    rows.sort(key=lambda r: (r["suite"], r["task"]))
    result = {
        "tasks": rows,
        "min_task_success": min(r["success"] for r in rows),
        "mean_success": {s: sum(r["success"] for r in rows if r["suite"] == s) / len(tasks) for s in SUITES},
        "tasks_at_least_80": sum(r["success"] >= 0.8 for r in rows),
        "inits_per_task": args.inits,
        "wall_s": time.perf_counter() - started,
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
    }
    print(json.dumps({k: v for k, v in result.items() if k != "tasks"}, indent=2))
    if not args.smoke:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "libero_experts.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
