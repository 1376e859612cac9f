from __future__ import annotations

import pytest
from conftest import make_env

from ript_robot.config import RuntimeConfig
from ript_robot.envs.pick import make_contexts
from sim_bridge.rollouts import SimRollouts


def test_batches_of_max_envs_return_episodes_in_order(policy):
    made = []

    def factory():
        made.append(make_env(max_steps=6))
        return made[-1]

    contexts = make_contexts("lab_b", range(5), tasks=("pick up the yellow block",))
    rollouts = SimRollouts(factory, RuntimeConfig(execute_steps=4), max_envs=2)
    episodes = rollouts(policy, contexts)
    assert [e.meta.context for e in episodes] == contexts
    assert all(e.meta.label is not None and e.meta.label.source == "sim" for e in episodes)
    assert len(made) == 2  # simulators are pooled and reused across batches
    again = rollouts(policy, contexts[:1], deterministic=True)
    assert len(again) == 1 and len(made) == 2
    rollouts.close()
    assert rollouts.envs == []


def test_max_envs_must_be_positive():
    with pytest.raises(ValueError, match="max_envs"):
        SimRollouts(make_env, RuntimeConfig(), max_envs=0)
