"""`ript sim-train`: SFT from a few demonstrations, then RIPT, on LIBERO tasks.

Everything goes through the parts a robot uses: demonstrations and rollouts are committed to
the episode store, the `StoreTrainer` judges groups and publishes policies, and an actor
claims the trainer's schedule and runs it through the shared runtime, here on LIBERO
simulators in worker processes instead of an arm. The actor runs in a thread of this
process; the simulators step in their own processes.

Contexts are LIBERO's fixed initial states: of each task, the first `train_inits` are the
RIPT pool, the next `heldout_inits` are for evaluation only, and the expert's
demonstrations come from the last `demos_per_task` (or from LIBERO's HDF5 files).
`trainer.output_dir` gets `metrics.jsonl`, `tensorboard/`, `success.png` and `summary.json`.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from functools import partial
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ript_robot.config import LiberoConfig, QuickstartConfig
from ript_robot.data.checkpoints import latest_version
from ript_robot.data.store import EpisodeStore
from ript_robot.envs.demos import record_demonstrations
from ript_robot.policies import Policy, make_policy
from ript_robot.policies.published import load_published
from ript_robot.rl.sft import behaviour_cloning, chunk_dataset
from ript_robot.runtime.evaluate import EvalResult
from ript_robot.train.logging import MetricsLogger, plot_success
from ript_robot.train.service import StoreTrainer
from ript_robot.train.sim_actor import ActorReport, run_actor
from ript_robot.types import Context, Episode
from sim_bridge.libero_demos import demo_file, read_libero_demos
from sim_bridge.libero_env import LiberoEnv, libero_contexts
from sim_bridge.libero_expert import LiberoExpert
from sim_bridge.rollouts import SimRollouts
from sim_bridge.workers import WorkerEnv

DEMO_FRAME_EVERY = 2  # the expert needs no pictures: demonstrations render every other step


def libero_context_sets(lib: LiberoConfig) -> tuple[list[Context], list[Context]]:
    """The RIPT pool and the held-out contexts: disjoint initial states of each task."""
    train = libero_contexts(lib.suite, lib.tasks, list(range(lib.train_inits)))
    heldout_inits = list(range(lib.train_inits, lib.train_inits + lib.heldout_inits))
    return train, libero_contexts(lib.suite, lib.tasks, heldout_inits) if heldout_inits else []


def libero_rollouts(cfg: QuickstartConfig, robot_id: str = "libero") -> SimRollouts:
    """Rollouts on LIBERO simulators, each in a worker process, `libero.workers` in lock step."""
    names = (f"{cfg.libero.suite}-{i}" for i in itertools.count())
    make = partial(LiberoEnv.from_config, cfg.libero)
    return SimRollouts(lambda: WorkerEnv(make, next(names)), cfg.runtime, cfg.libero.workers, robot_id)


def demonstrations(lib: LiberoConfig, progress: bool = True) -> list[Episode]:
    """LIBERO's own demonstrations when `demo_dir` is given, else the scripted expert's (successful ones)."""
    if lib.demo_dir is not None:
        return [
            demo
            for task in lib.tasks
            for demo in read_libero_demos(
                demo_file(lib.demo_dir, lib.suite, task), lib.suite, task, lib.image_size, tuple(lib.cameras)
            )[: lib.demos_per_task or None]
        ]
    env = LiberoEnv.from_config(lib.model_copy(update={"max_steps": 0}))  # the suite's own limit: the expert is slow
    inits = list(range(50 - lib.demos_per_task, 50))
    contexts = libero_contexts(lib.suite, lib.tasks, inits)
    demos = []
    for context in tqdm(contexts, desc="expert demonstrations", disable=not progress, leave=False):
        demos += record_demonstrations(env, [context], LiberoExpert(), frame_every=DEMO_FRAME_EVERY)
    env.close()
    return demos


def sft_policy(cfg: QuickstartConfig, store: EpisodeStore, log: MetricsLogger, progress: bool) -> Policy:
    """Record (or read) demonstrations, keep them in the store, and fit a fresh policy to them."""
    demos = demonstrations(cfg.libero, progress)
    if not demos:
        raise ValueError("no successful demonstration to start from: raise libero.demos_per_task or set demo_dir")
    writer = store.writer()
    for demo in demos:
        store.write_episode(demo, writer)
    writer.close()
    policy = make_policy(cfg.policy, LiberoEnv.from_config(cfg.libero).spec)
    losses = behaviour_cloning(policy, chunk_dataset(policy, demos), cfg.sft, cfg.seed, "SFT", progress)
    log.log("sft", cfg.sft.steps, {"demos": len(demos), "bc_loss": float(np.mean(losses[-50:])) if losses else 0.0})
    return policy


def run_sim_train(cfg: QuickstartConfig, progress: bool = True) -> dict[str, Any]:
    """SFT (unless the store already has a policy), then RIPT through the store; returns the run's figures."""
    start = time.monotonic()
    torch.manual_seed(cfg.seed)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    out = cfg.trainer.output_dir
    out.mkdir(parents=True, exist_ok=True)
    log = MetricsLogger(out)
    store = EpisodeStore(cfg.store.uri, create=True)
    train, heldout = libero_context_sets(cfg.libero)
    initial = None if latest_version(store.backend) is not None else sft_policy(cfg, store, log, progress)
    trainer = StoreTrainer(store, train, cfg.ript, cfg.trainer, cfg.seed, log)
    trainer.start(initial)
    assert trainer.policy is not None
    first_version = trainer.policy.version

    report = ActorReport()
    failure: list[Exception] = []

    def act() -> None:
        nonlocal report
        try:
            report = run_actor(cfg, store, progress=False, sim=libero_rollouts(cfg, cfg.actor.robot_id))
        except Exception as exc:  # stop the trainer, which would wait for these rollouts forever
            failure.append(exc)
            trainer.abort_reason = f"the actor failed: {type(exc).__name__}: {exc}"

    actor = threading.Thread(target=act, name="libero-actor", daemon=True)
    actor.start()
    try:
        history = trainer.run(cfg.ript.iterations, progress=progress)
    except RuntimeError:
        if failure:
            raise failure[0] from None
        raise
    finally:
        trainer.schedule.finish(trainer.policy.version)  # the actor stops at its next look at the schedule
        actor.join()

    results: dict[str, EvalResult] = {}
    if heldout:  # the SFT policy and the last one, on initial states RIPT never saw
        sim = libero_rollouts(cfg, "eval")
        try:
            for name, policy in (("before", load_published(store.backend, first_version)), ("after", trainer.policy)):
                results[name] = sim.evaluate(policy, heldout, cfg.eval, desc=f"eval {name}")
        finally:
            sim.close()
    per_version = store.info()["success_per_version"]
    versions = sorted(per_version)
    if versions:
        plot_success(
            versions,
            {"RIPT rollouts (sampled)": [per_version[v]["success"] for v in versions]},
            out / "success.png",
            title=f"RIPT on {cfg.libero.suite} tasks {cfg.libero.tasks}",
        )
    log.close()
    summary = {
        "suite": cfg.libero.suite,
        "tasks": cfg.libero.tasks,
        "policy_versions": [first_version, trainer.policy.version],
        "rollout_success_per_version": {v: per_version[v]["success"] for v in versions},
        "rollout_episodes_per_version": {v: per_version[v]["episodes"] for v in versions},
        "heldout_before": results["before"].success_rate if "before" in results else None,
        "heldout_after": results["after"].success_rate if "after" in results else None,
        "heldout_contexts": len(heldout),
        "iterations": len(history),
        "rollout_episodes": report.episodes,
        "wall_clock_s": time.monotonic() - start,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if progress:
        tqdm.write(json.dumps(summary, indent=2))
    return summary
