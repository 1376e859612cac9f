"""kill -9 at random points: writers, trainers and actors die mid-work, and nothing committed is lost or partial.

Each trial starts one process in a role, lets it work for a random time, kills it with SIGKILL
and then checks the store from outside:
- writer: commits synthetic episodes of random lengths, printing each id once committed;
  every id printed must be in the index and intact (`verify.check_episode`);
- trainer: a `StoreTrainer` with a fleet of synthetic rollouts in the same process (both die);
  every published version must load (manifest, sha256, safetensors), the latest included;
- actor: `ript actor` on the built-in task; every episode the index showed before the kill must
  still be there and intact afterwards.
After every trial, every episode committed so far is checked. The store persists across a role's
trials, so later processes start on what earlier ones left behind (staging leftovers, claimed
slots, a trainer resuming).

    python benchmarks/kill_drill.py --role writer --store DIR   # a role's process (what the trials start)
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "train")]  # the test suite's synthetic episodes, tiny policy and fleet

from synthetic import synthetic_episode  # noqa: E402

from ript_robot.data import EpisodeStore  # noqa: E402
from ript_robot.data.checkpoints import latest_version, published_versions  # noqa: E402
from ript_robot.data.verify import check_episode  # noqa: E402
from ript_robot.policies import CheckpointError  # noqa: E402
from ript_robot.policies.published import load_published  # noqa: E402

ROLES = ("writer", "trainer", "actor")
ACTOR_OVERRIDES = ["task.image_size=32", "task.max_steps=12", "runtime.execute_steps=4", "actor.max_envs=4"]


def run_writer(uri: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    store = EpisodeStore(uri)
    print("READY", flush=True)
    with store.writer(chunk_frames=4, flush_frames=8) as writer:
        for i in itertools.count():
            episode = synthetic_episode(f"ctx{i % 5}", steps=int(rng.integers(3, 60)), seed=seed * 10_000 + i)
            store.write_episode(episode, writer)
            writer.flush()
            print("COMMITTED", episode.meta.episode_id, flush=True)


def run_trainer(uri: str, seed: int) -> None:
    from conftest import tiny_policy
    from fake_fleet import FakeFleet, contexts
    from test_service import ript_config

    from ript_robot.config import TrainerConfig
    from ript_robot.train.service import StoreTrainer

    store = EpisodeStore(uri)
    fleet = FakeFleet(uri)
    fleet.start()
    trainer = StoreTrainer(store, contexts(8), ript_config(), TrainerConfig(poll_s=0.05, stall_timeout_s=1.0), seed)
    trainer.start(tiny_policy())
    print("READY", flush=True)
    trainer.run(10**6, progress=False)


def prepare_actor_store(uri: str) -> None:
    """A published tiny policy and a long schedule for the actors of every trial."""
    from conftest import tiny_policy

    from ript_robot.data.schedule import Schedule
    from ript_robot.envs.pick import make_contexts
    from ript_robot.policies.published import publish_policy

    store = EpisodeStore(uri)
    publish_policy(store.backend, tiny_policy())
    Schedule(store.backend).write_round(0, make_contexts("workcell", range(100)), rollouts_per_context=4)


def _start(role: str, uri: str, seed: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), str(TESTS / "train")])}
    if role == "actor":
        command = [sys.executable, "-m", "ript_robot.cli", "actor", "--store", uri, "--quiet", *ACTOR_OVERRIDES]
    else:
        command = [sys.executable, __file__, "--role", role, "--store", uri, "--seed", str(seed)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)


def _wait_ready(proc: subprocess.Popen[str], role: str) -> None:
    """Block until the role's process is up (actors print nothing: the caller's delay covers their start)."""
    if role == "actor":
        return
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "READY":
            return
    raise RuntimeError(f"the {role} process exited ({proc.wait()}) before it was ready")


def kill_trial(role: str, uri: str, rng: np.random.Generator, checked: set[str]) -> dict[str, Any]:
    """One start, a random delay, SIGKILL, then the checks; `checked` collects episodes already found intact."""
    proc = _start(role, uri, int(rng.integers(1 << 30)))
    _wait_ready(proc, role)
    delay = float(rng.uniform(*{"writer": (0.0, 1.5), "trainer": (0.5, 6.0), "actor": (3.0, 8.0)}[role]))
    time.sleep(delay)
    seen = {r.episode_id for r in EpisodeStore(uri).refresh().records(kind=None)}
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    printed = {line.split()[1] for line in out.splitlines() if line.startswith("COMMITTED")}
    store = EpisodeStore(uri).refresh()
    committed = set(store.index.episodes)
    lost = len((printed | seen) - committed)
    damaged = [p for i in sorted(committed - checked) if (p := check_episode(store, i))]
    checked |= committed
    broken = []
    if role == "trainer":
        for version in published_versions(store.backend):
            try:
                load_published(store.backend, version)
            except CheckpointError as exc:
                broken.append(str(exc))
        if latest_version(store.backend) is None:
            broken.append("no latest policy after the kill")
    return {
        "role": role,
        "delay_s": delay,
        "committed_lost": lost + len(broken),
        "partial_or_damaged": len(damaged),
        "problems": damaged + broken,
    }


def kill_trials(counts: dict[str, int], root: Path, seed: int, progress: Any = None) -> dict[str, Any]:
    """Run `counts[role]` kills of each role, each role on a store of its own under `root`."""
    rng = np.random.default_rng(seed)
    trials, stores = [], {}
    for role, n in counts.items():
        uri = str(root / f"kill-{role}")
        if role == "actor" and n:
            prepare_actor_store(uri)
        checked: set[str] = set()
        for _ in range(n):
            trials.append(kill_trial(role, uri, rng, checked))
            if progress is not None:
                progress.update(1)
        stores[role] = len(checked)
    return {
        "kills": len(trials),
        "kills_per_role": {role: sum(t["role"] == role for t in trials) for role in counts},
        "committed_lost": sum(t["committed_lost"] for t in trials),
        "committed_partial": sum(t["partial_or_damaged"] for t in trials),
        "episodes_committed_in_kill_trials": sum(stores.values()),  # in the role's stores after the last kill
        "kill_problems": [p for t in trials for p in t["problems"]][:20],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="one process of the kill drill")
    parser.add_argument("--role", choices=("writer", "trainer"), required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    (run_writer if args.role == "writer" else run_trainer)(args.store, args.seed)


if __name__ == "__main__":
    main()
