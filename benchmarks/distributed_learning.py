"""The main job's learning result with the trainer and an actor as separate processes.

`ript train` (pretrain + SFT, then RIPT) and `ript actor` run as two processes that meet
only in a local episode store, exactly as a robot and an off-board trainer would; the same
config first runs in one process (`ript quickstart`), so `wall_clock_ratio_to_in_process`
compares two runs of one invocation. Every
published policy version is then evaluated on the training contexts (deterministic), and
the first and last on the held-out contexts. Prints the figures and saves them to
benchmarks/results/distributed_learning.json, with the curve in distributed_learning.png.

    python benchmarks/distributed_learning.py [--smoke] [key.sub=value ...]

--smoke: the learning benchmark's one-iteration main job, saves nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from learning import SMOKE

from ript_robot.config import QuickstartConfig, load_config
from ript_robot.data import EpisodeStore
from ript_robot.data.checkpoints import published_versions
from ript_robot.envs.pick import context_sets
from ript_robot.policies.published import load_published
from ript_robot.runtime.evaluate import evaluate
from ript_robot.train.logging import plot_success
from sim_bridge.rollouts import builtin_rollouts

RESULTS = Path(__file__).parent / "results"


def main(overrides: list[str]) -> dict:
    smoke = "--smoke" in overrides
    # a smoke run's policy barely succeeds: its trainer samples until a group is mixed rather than give up
    smoke_overrides = [*SMOKE, "trainer.max_fruitless_iterations=0"]
    overrides = [*smoke_overrides, *(o for o in overrides if o != "--smoke")] if smoke else overrides
    work = Path(tempfile.mkdtemp(prefix="ript-distributed-"))
    store_uri = str(work / "store")
    common = [f"store.uri={store_uri}", *overrides]
    ript = [sys.executable, "-m", "ript_robot.cli"]
    start = time.monotonic()  # the in-process main job first, same config, same machine, same run
    subprocess.run([*ript, "quickstart", "--quiet", f"output_dir={work / 'in_process'}", *common], check=True)
    in_process = json.loads((work / "in_process" / "summary.json").read_text())
    in_process_wall = time.monotonic() - start
    start = time.monotonic()
    trainer = subprocess.Popen([*ript, "train", "--quiet", f"trainer.output_dir={work / 'train'}", *common])
    actor = subprocess.Popen([*ript, "actor", "--quiet", "torch_threads=1", *common], stdout=subprocess.DEVNULL)
    if trainer.wait() != 0 or actor.wait() != 0:
        actor.terminate()  # it stops by itself once the trainer has finished the schedule: not when it failed
        raise SystemExit(f"trainer exited {trainer.returncode}, actor {actor.wait()}")
    wall = time.monotonic() - start

    cfg = load_config(QuickstartConfig, None, common)
    torch.set_num_threads(2)
    store = EpisodeStore(store_uri, create=False).refresh()
    train, heldout = context_sets(cfg.task)
    sim = builtin_rollouts(cfg)
    versions = published_versions(store.backend)
    policies = {v: load_published(store.backend, v) for v in versions}
    curve = [evaluate(lambda c, d, p=policies[v]: sim(p, c, d), train, cfg.eval).success_rate for v in versions]
    first, last = versions[0], versions[-1]
    heldout_first = evaluate(lambda c, d: sim(policies[first], c, d), heldout, cfg.eval).success_rate
    heldout_last = evaluate(lambda c, d: sim(policies[last], c, d), heldout, cfg.eval).success_rate
    sim.close()
    info = store.info()
    store_bytes = sum(p.stat().st_size for p in Path(store_uri).rglob("*") if p.is_file())
    result = {
        "sft_success": curve[0],
        "ript_success": curve[-1],
        "heldout_sft_success": heldout_first,
        "heldout_ript_success": heldout_last,
        "iterations": last,
        "iterations_to_90": next((v for v, s in zip(versions, curve, strict=True) if s >= 0.9), None),
        "success_per_version": curve,
        "wall_clock_s": wall,
        "rollout_episodes": info["rollouts"],
        "store_mb": store_bytes / 1e6,
        "processes": "trainer and one actor, local store",
        "in_process_reference": {
            "sft_success": in_process["sft_success"],
            "ript_success": in_process["ript_success"],
            "rollout_episodes": in_process["rollout_episodes"],
            "wall_clock_s": in_process_wall,
        },
        "wall_clock_ratio_to_in_process": wall / in_process_wall,
        "overrides": overrides,
    }
    print(json.dumps(result, indent=2))
    if smoke:
        return result
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distributed_learning.json").write_text(json.dumps(result, indent=2))
    plot_success(
        versions,
        {"training contexts (deterministic)": curve},
        RESULTS / "distributed_learning.png",
        title="RIPT with trainer and actor in separate processes",
    )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
