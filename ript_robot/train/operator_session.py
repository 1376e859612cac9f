"""The trainer with a person labeling: a whole session on one store, and what it is measured by.

`run_session` runs, on one store and one sped-up clock, what a lab runs around its arm: the store
trainer, a simulated actor that commits its rollouts unlabeled (as a real arm does), the
`ScriptedOperator` labeling them late, mis-tapping, undoing, correcting and discarding, a
deterministic evaluation actor and imported demonstrations on the same contexts (which must
never enter a RIPT group). `session_figures` then measures, from the store alone, whether
late labels cost rollouts and whether RIPT learned only from what it may.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ript_robot.config import QuickstartConfig, SFTConfig
from ript_robot.data.checkpoints import published_versions, read_manifest
from ript_robot.data.schedule import Schedule
from ript_robot.data.store import EpisodeStore
from ript_robot.envs.demos import record_demonstrations
from ript_robot.envs.pick import PickEnv, expert_action, make_contexts
from ript_robot.policies import make_policy
from ript_robot.policies.base import Policy
from ript_robot.policies.published import PolicyFollower, load_published
from ript_robot.rl.ppo import build_batch
from ript_robot.rl.sampling import Group
from ript_robot.rl.sft import behaviour_cloning, chunk_dataset
from ript_robot.runtime.timing import ScaledClock
from ript_robot.train.service import StoreTrainer
from ript_robot.train.sim_actor import run_actor
from ript_robot.types import Context, Label
from sim_bridge.operator import OperatorConfig, ScriptedOperator
from sim_bridge.rollouts import builtin_rollouts

# the simulated arm's workspace calibration: its step and box limits are clips beyond the policy's bounds
WORKSPACE = Path(__file__).parents[2] / "calibration" / "sim_pick_workspace.yaml"


def session_config(staleness: int, groups: int = 2, rollouts_per_context: int = 4) -> QuickstartConfig:
    """A small session on the built-in task: K rollouts per group, `groups` informative groups per update."""
    return QuickstartConfig.model_validate({
        "task": {"image_size": 32},
        "policy": {"hidden_dim": 64, "channels": 8, "keypoints": 8, "chunk_size": 4},
        "runtime": {"execute_steps": 4, "safety": {"workspace": str(WORKSPACE)}},
        "ript": {"rollouts_per_context": rollouts_per_context, "groups_per_iteration": groups,
                 "max_sampling_rounds": 4, "ppo_epochs": 1, "minibatch_size": 16},
        "trainer": {"max_staleness": staleness, "poll_s": 1.0},
        "actor": {"max_envs": 8},
    })  # fmt: skip


def cloned_policy(cfg: QuickstartConfig, seed: int = 0) -> Policy:
    """A policy cloned from 256 expert demonstrations of the workcell scene: it succeeds about two
    times in three when sampled, so groups of K mix rewards (about half of them informative)."""
    env = PickEnv(cfg.task.image_size, cfg.task.max_steps)
    torch.manual_seed(seed)
    policy = make_policy(cfg.policy, env.spec)
    demos = record_demonstrations(env, make_contexts("workcell", range(64)), expert_action)
    sft = SFTConfig(steps=1000, lr=2e-3, batch_size=128)
    behaviour_cloning(policy, chunk_dataset(policy, demos), sft, seed, progress=False)
    return policy


@dataclass
class Session:
    """What a session left behind besides the store."""

    history: list[dict[str, Any]]
    operator: ScriptedOperator
    evaluations: int
    demonstrations: int
    wall_s: float
    virtual_s: float
    failures: list[str] = field(default_factory=list)


def _evaluate(cfg: QuickstartConfig, uri: str, contexts: list[Context], stop: threading.Event) -> int:
    """An evaluation actor: deterministic runs of the latest policy on the training contexts, sim-labeled."""
    store = EpisodeStore(uri)
    follower, sim, runs = PolicyFollower(store.backend), builtin_rollouts(cfg, len(contexts), "evaluator"), 0
    with store.writer() as writer:
        while not stop.is_set():
            follower.update()
            if follower.policy is not None:
                runs += len(sim(follower.policy, contexts, deterministic=True, sink=writer))
                writer.flush()
            stop.wait(0.5)
    sim.close()
    return runs


def run_session(
    cfg: QuickstartConfig,
    uri: str,
    policy: Policy,
    contexts: list[Context],
    iterations: int,
    operator: OperatorConfig | None = None,
    speedup: float = 30.0,
    timeout_s: float = 600.0,
    seed: int = 0,
) -> Session:
    """Train `iterations` updates from `policy` with the scripted operator labeling; `cfg.trainer` and
    `cfg.ript` configure the trainer. speedup: clock seconds per real second; timeout_s: real seconds
    after which the trainer is stopped (a test must fail, not hang)."""
    started = time.monotonic()
    store = EpisodeStore(uri)
    clock = ScaledClock(speedup)
    env = PickEnv(cfg.task.image_size, cfg.task.max_steps)
    demos = record_demonstrations(env, contexts[:2], expert_action)  # imports on the same contexts
    for demo in demos:
        store.write_episode(demo)
    trainer = StoreTrainer(store, contexts, cfg.ript, cfg.trainer, seed, clock=clock)
    trainer.start(policy)
    outcomes: dict[str, Label] = {}
    person = ScriptedOperator(uri, outcomes, clock, operator or OperatorConfig(), seed)
    stop, results, failures = threading.Event(), {}, []

    def actor() -> None:
        try:
            results["actor"] = run_actor(cfg, EpisodeStore(uri), progress=False, outcomes=outcomes)
        except Exception as exc:  # the trainer must not wait forever on a dead actor
            failures.append(f"actor: {type(exc).__name__}: {exc}")
            trainer.abort_reason = failures[-1]

    def evaluator() -> None:
        results["evaluations"] = _evaluate(cfg, uri, contexts[:2], stop)

    threads = [threading.Thread(target=actor, daemon=True), threading.Thread(target=evaluator, daemon=True)]
    for t in [*threads, person]:
        t.start()
    timer = threading.Timer(timeout_s, lambda: setattr(trainer, "abort_reason", f"timed out after {timeout_s} s"))
    timer.start()
    try:
        history = trainer.run(iterations, progress=False)
    finally:
        timer.cancel()
        stop.set()
        Schedule(store.backend).finish(trainer.policy.version)
        for t in threads:
            t.join(timeout=60)
        person.stop()
    if "actor" in results:
        failures += results["actor"].failures
    virtual = (time.monotonic() - started) * speedup
    return Session(
        history, person, results.get("evaluations", 0), len(demos), time.monotonic() - started, virtual, failures
    )


def session_figures(uri: str, staleness: int) -> dict[str, Any]:
    """Issue 17's figures, from the store alone (see benchmarks/operator_lag.py for their definitions)."""
    store = EpisodeStore(uri, create=False).refresh()
    records = store.index.episodes
    versions = published_versions(store.backend)
    final = max(versions)
    manifests = [read_manifest(store.backend, v) for v in versions[1:]]
    used = {i for m in manifests for i in m.get("trained_on", []) + m.get("rejected", [])}
    schedule = Schedule(store.backend)
    slots = [s for v in range(final + 1) for s in schedule.slots(v)]
    slot_ids = {s.slot_id for s in slots}
    rollouts = [
        r
        for r in records.values()
        if r.meta.slot_id in slot_ids
        and r.meta.sampling == "sampled"
        and not r.discarded
        # rollouts whose usable window (versions u .. u + staleness) closed before the last update
        and r.meta.policy_version + staleness <= final - 1
    ]
    inside = 0
    for m in manifests:
        for episode_id, entry in m.get("labels_used", {}).items():
            row = next((lb for lb in records[episode_id].labels if lb.time == entry["time"]), None)
            inside += row is None or entry["judged_at"] < row.time + row.undo_window_s
    non_rollout = [
        i
        for i in used
        if records[i].meta.kind != "rollout" or records[i].meta.sampling != "sampled" or records[i].meta.slot_id is None
    ]
    clips = _clips(store, manifests)
    by_slot = {r.meta.slot_id: r for r in records.values() if r.meta.slot_id}
    replacements = [s for s in slots if s.replaces is not None]
    for_discards = [s for s in replacements if s.replaces in by_slot and by_slot[s.replaces].discarded]
    return {
        "updates": len(manifests),
        "rollouts_committed": sum(r.meta.slot_id in slot_ids for r in records.values()),
        "rollouts_counted": len(rollouts),
        "rollouts_used_share": float(np.mean([r.episode_id in used for r in rollouts])) if rollouts else float("nan"),
        "labels_used_inside_undo_window": int(inside),
        "non_rollout_episodes_trained": len(non_rollout),
        "non_rollout_episodes_in_store": sum(r.meta.slot_id is None for r in records.values()),
        # beyond K per group, by the trainer's own doing: a discarded rollout's replacement is the operator's
        "extra_rollouts_scheduled_share": (len(replacements) - len(for_discards)) / max(len(slots), 1),
        "discard_replacements_share": len(for_discards) / max(len(slots), 1),
        **clips,
        "mixed_version_groups": sum(m["metrics"].get("mixed_version_groups", 0) for m in manifests),
        "corrections_reported": len({c for m in manifests for c in m.get("corrections", [])}),
    }


def _clips(store: EpisodeStore, manifests: list[dict[str, Any]]) -> dict[str, float]:
    """How the PPO batches treated the steps of trained episodes that the safety filter changed.

    clipped_share, limited_share: of executed steps, those the filter changed, and changed beyond the
    policy's bounds; clipped_steps_credited: the share of clipped steps scored under the bounded
    (censored) likelihood; limited_steps_credited: limited steps credited (must be 0)."""
    counts = {"executed": 0, "clipped": 0, "limited": 0, "clipped_credited": 0, "limited_credited": 0}
    for m in manifests:
        policy = load_published(store.backend, m["version"] - 1)
        for episode in store.read_episodes(m["trained_on"]):
            episode.meta.label = Label(bool(m["labels_used"][episode.meta.episode_id]["success"]), "sim")
            steps = episode.steps
            # one-episode group against a zero-reward twin: every chunk enters the batch with its mask
            twin = Label(not episode.meta.label.success, "sim")
            other = type(episode)(type(episode.meta)(**{**vars(episode.meta), "label": twin}), steps, episode.chunks,
                                  episode.chunk_observations)  # fmt: skip
            batch = build_batch(policy, [Group(episode.meta.context, [episode, other])])
            first = np.cumsum(np.bincount([s.chunk_index for s in steps], minlength=len(episode.chunks)))
            for s in steps:
                counts["executed"] += 1
                if s.safety_clipped:
                    kind = "limited" if s.safety_limited else "clipped"
                    position = s.step - (first[s.chunk_index - 1] if s.chunk_index else 0)
                    token = position - position % policy.log_prob_span  # where its log-prob sits
                    counts[kind] += 1
                    counts[f"{kind}_credited"] += int(batch.mask[s.chunk_index, token].item() > 0)
    clipped = counts["clipped"] + counts["limited"]
    return {
        "clipped_share": clipped / max(counts["executed"], 1),
        "limited_share": counts["limited"] / max(counts["executed"], 1),
        "clipped_steps_credited": counts["clipped_credited"] / max(counts["clipped"], 1),
        "limited_steps_credited": counts["limited_credited"],
    }
