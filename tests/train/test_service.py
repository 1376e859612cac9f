"""The off-board trainer: informative groups only, each episode used once, resumable from the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from conftest import tiny_policy
from fake_fleet import FakeFleet, contexts
from synthetic import subprocess_env

from ript_robot.config import RIPTConfig, TrainerConfig
from ript_robot.data import EpisodeStore
from ript_robot.data.checkpoints import publish_policy, published_versions, read_manifest
from ript_robot.data.schedule import Schedule
from ript_robot.train.service import StoreTrainer

HERE = Path(__file__).resolve().parent


def ript_config() -> RIPTConfig:
    return RIPTConfig(
        rollouts_per_context=4, groups_per_iteration=3, max_sampling_rounds=3, ppo_epochs=1, minibatch_size=16
    )


def trainer_config() -> TrainerConfig:
    return TrainerConfig(poll_s=0.05)


def manifests(store: EpisodeStore) -> list[dict]:
    return [read_manifest(store.backend, v) for v in published_versions(store.backend)]


def test_the_trainer_updates_from_informative_groups_and_uses_each_episode_once(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    fleet = FakeFleet(str(tmp_path))
    fleet.start()
    trainer = StoreTrainer(store, contexts(8), ript_config(), trainer_config())
    assert not trainer.start(tiny_policy())
    history = trainer.run(2, progress=False)
    fleet.join(timeout=30)
    assert not fleet.is_alive() and Schedule(store.backend).finished()  # actors are told to stop
    published = manifests(store)
    assert [m["version"] for m in published] == [0, 1, 2]
    records = {r.episode_id: r for r in store.refresh().records()}
    used: set[str] = set()
    for m in published[1:]:
        ids = set(m["trained_on"]) | set(m["rejected"])
        assert not ids & used, "an episode was used by two updates"
        used |= ids
        trained = [records[i] for i in m["trained_on"]]
        assert all(r.meta.policy_version == m["version"] - 1 for r in trained)  # on-policy (staleness 0)
        by_context: dict[str, list[float]] = {}
        for r in trained:
            by_context.setdefault(r.meta.context.context_id, []).append(r.reward)
        assert len(by_context) >= 3
        for rewards in by_context.values():
            assert len(rewards) % 4 == 0 and 0.0 < sum(rewards) < len(rewards)  # mixed rewards only
    updated = [h for h in history if h["updated"]]
    assert len(updated) == 2
    for h in updated:
        assert h["groups_accepted"] >= 3 and {"approx_kl", "clipfrac", "loss"} <= h.keys()
    uniform = [
        i for m in published[1:] for i in m["rejected"] if records[i].meta.context.context_id[-2:] in ("/0", "/1")
    ]
    assert all(records[i].reward == 1.0 for i in uniform)


def test_a_trainer_killed_mid_update_resumes_from_the_store(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    publish_policy(store.backend, tiny_policy())
    fleet = FakeFleet(str(tmp_path))
    fleet.start()
    env = subprocess_env()
    env["PYTHONPATH"] += os.pathsep + str(HERE)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "trainer_worker.py"), str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    in_flight = json.loads(proc.stdout.readline())
    assert proc.stdout.readline().strip() == "UPDATING"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert published_versions(store.backend) == [0]  # the killed update published nothing

    torch.manual_seed(0)
    trainer = StoreTrainer(EpisodeStore(tmp_path), contexts(8), ript_config(), trainer_config())
    assert trainer.start()  # resumed at v0 from the store
    trainer.run(2, progress=False)
    fleet.join(timeout=30)
    v1, v2 = manifests(store)[1:]
    assert set(in_flight) <= set(v1["trained_on"]), "the restarted trainer lost episodes of the killed update"
    assert not (set(v1["trained_on"]) | set(v1["rejected"])) & (set(v2["trained_on"]) | set(v2["rejected"]))
