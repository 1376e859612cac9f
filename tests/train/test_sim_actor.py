"""A simulated actor meets damaged publications: it waits for a first policy that loads, then keeps it."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_policy

from ript_robot.config import QuickstartConfig
from ript_robot.data import EpisodeStore
from ript_robot.data.backend import Backend
from ript_robot.data.schedule import Schedule
from ript_robot.envs.pick import make_contexts
from ript_robot.policies.published import publish_policy
from ript_robot.train.sim_actor import ActorReport, run_actor
from ript_robot.types import Episode
from sim_bridge.rollouts import SimRollouts, builtin_rollouts

CFG = QuickstartConfig(
    task={"image_size": 32, "max_steps": 8},
    runtime={"execute_steps": 4},
    actor={"max_envs": 2, "poll_s": 0.05},
    torch_threads=1,
)
CONTEXTS = make_contexts("workcell", range(2))[:2]


def publish_damaged(root: Path, version: int) -> None:
    """Publish `version` and then cut its weights short, as a partial copy would."""
    policy = tiny_policy(seed=version)
    policy.version = version
    publish_policy(Backend(root), policy)
    weights = root / "policies" / f"v{version:06d}" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])


class DamagesAfterTheFirstBatch(SimRollouts):
    """The built-in task; once its first batch is done, a damaged newer version appears in the store."""

    def __init__(self, root: Path):
        built = builtin_rollouts(CFG, CFG.actor.max_envs, "sim-0")
        super().__init__(built.make_env, built.runtime, built.max_envs, built.robot_id)
        self.root, self.batches = root, 0

    def __call__(self, *args: Any, **kwargs: Any) -> list[Episode]:
        episodes = super().__call__(*args, **kwargs)
        self.batches += 1
        if self.batches == 1:
            publish_damaged(self.root, 3)
        return episodes


def test_the_actor_waits_for_a_loadable_policy_and_keeps_it_past_a_damaged_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = EpisodeStore(tmp_path, create=True)
    publish_damaged(tmp_path, 1)
    result: dict[str, ActorReport] = {}
    sim = DamagesAfterTheFirstBatch(tmp_path)
    actor = threading.Thread(target=lambda: result.update(report=run_actor(CFG, store, 4, False, sim)), daemon=True)
    with caplog.at_level(logging.WARNING, logger="ript_robot.data.checkpoints"):
        actor.start()
        deadline = time.monotonic() + 30
        while not any("waiting" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.02)
        (waiting,) = [r.getMessage() for r in caplog.records]
        assert "no policy loaded yet" in waiting and f"{tmp_path}/policies/v000001/model.safetensors" in waiting
        assert actor.is_alive()  # waiting, not crashed
        good = tiny_policy(seed=2)
        good.version = 2
        publish_policy(store.backend, good)
        Schedule(store.backend).write_round(2, CONTEXTS, rollouts_per_context=2)
        actor.join(timeout=60)
    assert not actor.is_alive() and result["report"].episodes == 4
    assert result["report"].policy_versions == [2]  # v3 never replaced the v2 it was running
    assert {r.meta.policy_version for r in store.refresh().records()} == {2}
    kept = caplog.records[-1].getMessage()
    assert "keeping policy v2" in kept and "policies/v000003/model.safetensors" in kept and "sha256" in kept
