"""The off-board trainer: informative groups only, each episode used once, resumable from the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import tiny_policy
from fake_fleet import FakeFleet, contexts
from synthetic import subprocess_env

from ript_robot.config import QuickstartConfig, RIPTConfig, TrainerConfig
from ript_robot.data import EpisodeStore
from ript_robot.data.checkpoints import published_versions, read_manifest
from ript_robot.data.schedule import Schedule
from ript_robot.envs.pick import make_contexts
from ript_robot.policies.published import load_published, publish_policy
from ript_robot.train.service import StoreTrainer
from ript_robot.train.sim_actor import run_actor
from ript_robot.types import CheckpointError

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


def test_a_trainer_whose_groups_never_carry_signal_stops_and_says_why(tmp_path: Path) -> None:
    """Every rollout fails: after trainer.max_fruitless_iterations whole sampling budgets it stops, publishes
    nothing and tells the actors to stop, instead of spending rollouts (robot time, labels) forever."""
    store = EpisodeStore(tmp_path)
    fleet = FakeFleet(str(tmp_path), rate=lambda context_id: 0.0)
    fleet.start()
    config = TrainerConfig(poll_s=0.05, max_fruitless_iterations=2)
    trainer = StoreTrainer(store, contexts(8), ript_config(), config)
    trainer.start(tiny_policy())
    history = trainer.run(3, progress=False)
    fleet.join(timeout=30)
    assert [h["updated"] for h in history] == [False, False]
    assert [h["groups_rejected"] for h in history] == [9, 9]  # 3 rounds of 3 groups each time
    assert not fleet.is_alive() and Schedule(store.backend).finished()
    assert published_versions(store.backend) == [0]
    assert trainer.stop_reason is not None
    for text in ("v0", "2 sampling budgets in a row", "18 groups all failed", "trainer.max_fruitless_iterations"):
        assert text in trainer.stop_reason


def test_a_trainer_device_this_machine_lacks_is_refused_naming_the_setting(tmp_path: Path) -> None:
    trainer = StoreTrainer(EpisodeStore(tmp_path), contexts(4), ript_config(), TrainerConfig(device="cuda:99"))
    with pytest.raises(CheckpointError, match=r"trainer.device='cuda:99' cannot hold the policy here .*set it to cpu"):
        trainer.start(tiny_policy())


def test_the_trainer_updates_where_trainer_device_puts_the_policy(tmp_path: Path) -> None:
    """On the CPU here (`benchmarks/device/gpu.py` compares cuda against cpu on a GPU machine): the samples,
    built on the CPU, are scored where the weights are, and what is published reloads bit for bit."""
    store = EpisodeStore(tmp_path)
    fleet = FakeFleet(str(tmp_path))
    fleet.start()
    trainer = StoreTrainer(store, contexts(8), ript_config(), TrainerConfig(poll_s=0.05, device="cpu"))
    trainer.start(tiny_policy())
    assert trainer.policy is not None and trainer.policy.device == torch.device("cpu")
    history = trainer.run(1, progress=False)
    fleet.join(timeout=30)
    assert history[-1]["updated"]
    first, published = load_published(store.backend, 0).checkpoint_state(), load_published(store.backend, 1)
    trained = trainer.policy.checkpoint_state()
    assert any(not torch.equal(first[key], value) for key, value in trained.items())
    for key, value in trained.items():
        assert torch.equal(published.checkpoint_state()[key], value.cpu())


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


def test_damaged_rollouts_are_never_trained_on_and_their_slots_run_again(tmp_path: Path) -> None:
    damaged: dict[str, str] = {}
    faults = [  # what object stores do to a chunk: lose it, cut it short, flip a bit, gain a stray one
        lambda path: path.unlink(),
        lambda path: path.write_bytes(path.read_bytes()[:-5]),
        lambda path: path.write_bytes(bytes([path.read_bytes()[0] ^ 4]) + path.read_bytes()[1:]),
        lambda path: path.with_name("9").write_bytes(b"stray"),
    ]
    count = iter(range(10**6))

    def damage(store: EpisodeStore, episode_id: str) -> None:
        n = next(count)
        if n % 5 == 0 and store.index.episodes[episode_id].meta.context.context_id[-2:] not in ("/0", "/1"):
            chunk = tmp_path / "episodes" / episode_id / ("state", "actions", "images/top", "timestamps")[n % 4]
            faults[n % 4](next(p for p in sorted(chunk.rglob("*")) if p.is_file() and p.name != "zarr.json"))
            damaged[episode_id] = store.index.episodes[episode_id].meta.slot_id or ""

    store = EpisodeStore(tmp_path)
    fleet = FakeFleet(str(tmp_path), damage=damage)
    fleet.start()
    trainer = StoreTrainer(store, contexts(8), ript_config(), trainer_config())
    trainer.start(tiny_policy())
    history = trainer.run(2, progress=False)
    fleet.join(timeout=30)
    trained = {i for m in manifests(store) for i in m["trained_on"]}
    assert damaged and not trained & set(damaged), "a damaged episode reached an update"
    assert set(trainer.damaged) <= set(damaged) and trainer.damaged  # found by reading, each with its reason
    assert all(episode_id in reason for episode_id, reason in trainer.damaged.items())
    schedule = Schedule(store.backend)
    replaced = {s.replaces for v in range(3) for s in schedule.slots(v) if s.replaces}
    assert {damaged[i] for i in trainer.damaged} & replaced  # slots damaged rollouts held were scheduled again
    assert all(h["updated"] and h["groups_accepted"] >= 3 for h in history)  # and each update still got its groups
    assert history[-1]["damaged_episodes"] == len(trainer.damaged)
    report = store.verify()
    assert {p.split()[1].rstrip(":") for p in report.problems} == set(damaged)


def test_the_trainer_schedules_as_the_in_process_learner_does(tmp_path: Path) -> None:
    """The same GroupSampler: without dynamic sampling every group is kept (uniform ones too), and the run
    stops once `ript.episode_budget` cannot pay for another group, every counted rollout included."""
    store = EpisodeStore(tmp_path)
    fleet = FakeFleet(str(tmp_path))
    fleet.start()
    ript = ript_config().model_copy(update={"dynamic_sampling": False, "episode_budget": 30})
    trainer = StoreTrainer(store, contexts(8), ript, trainer_config())
    trainer.start(tiny_policy())
    history = trainer.run(5, progress=False)
    fleet.join(timeout=30)
    assert [h["groups_accepted"] for h in history] == [3, 3, 1]  # 12 + 12 + the one group of 4 that still fits
    assert all(h["groups_rejected"] == 0 for h in history)
    published = manifests(store)
    assert [m["version"] for m in published] == [0, 1, 2, 3]
    used = [i for m in published[1:] for i in m["trained_on"] + m["rejected"]]
    assert len(used) == len(set(used)) == 28 <= ript.episode_budget


def test_reused_groups_join_the_next_update_with_the_labels_they_were_judged_with(tmp_path: Path) -> None:
    """ript.reuse_updates=2 in the trainer: v2 trains on its own groups and on v1's again, and its manifest
    says with which labels (so a later correction of a replayed episode is still reported)."""
    store = EpisodeStore(tmp_path)
    fleet = FakeFleet(str(tmp_path))
    fleet.start()
    ript = ript_config().model_copy(update={"reuse_updates": 2})
    trainer = StoreTrainer(store, contexts(8), ript, trainer_config())
    trainer.start(tiny_policy())
    history = trainer.run(2, progress=False)
    fleet.join(timeout=30)
    assert [h["replayed_groups"] for h in history] == [0, 3]
    first, second = manifests(store)[1:]
    replayed = set(first["trained_on"]) & set(second["trained_on"])
    assert replayed == set(first["trained_on"])  # every episode v1 trained on, once more in v2
    assert not replayed & set(second["rejected"])
    for episode_id in replayed:
        assert second["labels_used"][episode_id]["success"] == first["labels_used"][episode_id]["success"]


def test_the_trainer_keeps_and_imitates_groups_a_person_corrected(tmp_path: Path) -> None:
    """A simulated actor whose scripted operator rescues rollouts about to fail: the store trainer keeps those
    groups whatever their rewards, imitates the person's steps and trains on the rescued episodes."""
    cfg = QuickstartConfig(
        task={"image_size": 32, "max_steps": 20, "scripted_operator": True},
        runtime={"execute_steps": 4},
        actor={"max_envs": 8, "poll_s": 0.05},
        torch_threads=1,
    )
    store = EpisodeStore(tmp_path)
    ript = RIPTConfig(rollouts_per_context=2, groups_per_iteration=4, max_sampling_rounds=1, ppo_epochs=1)
    trainer = StoreTrainer(store, make_contexts("workcell", range(4)), ript, trainer_config())
    assert not trainer.start(tiny_policy(seed=3))
    actor = threading.Thread(target=run_actor, args=(cfg, store, None, False), daemon=True)
    actor.start()
    (metrics,) = trainer.run(1, progress=False)
    actor.join(timeout=60)
    assert metrics["updated"] and metrics["groups_corrected"] >= 1
    assert metrics["intervened_steps"] > 0 and metrics["bc_loss"] > 0
    (manifest,) = manifests(store)[1:]
    records = {r.episode_id: r for r in store.refresh().records()}
    rescued = [records[i] for i in manifest["trained_on"] if records[i].meta.interventions]
    assert rescued and all(r.reward == 0.0 for r in rescued)  # the policy's failure, whatever the operator's label


def test_the_trainer_updates_a_released_openvla_oft_checkpoint_only_where_ript_trains_it(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    fleet = FakeFleet(str(tmp_path))
    fleet.start()
    policy = tiny_policy(family="openvla_oft")
    base = {k: v.clone() for k, v in policy.state_dict().items() if k.startswith("backbone.") and ".lora_" not in k}
    trainer = StoreTrainer(store, contexts(8), ript_config().model_copy(update={"lr": 1e-5}), trainer_config())
    assert not trainer.start(policy)
    history = trainer.run(1, progress=False)
    fleet.join(timeout=30)
    assert [h["updated"] for h in history][-1] and [m["version"] for m in manifests(store)] == [0, 1]
    state = trainer.policy.state_dict()
    assert all(torch.equal(state[k], v) for k, v in base.items())  # the released weights stay as released
    published = trainer.policy.checkpoint_state()
    assert published and all(not k.startswith("backbone.") or ".lora_" in k for k in published)
