"""The PPO update data-parallel over two CPU processes (gloo) equals one process's on the same batch."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import tiny_policy
from data_parallel_worker import rank_main, update
from test_ppo import _rollout_groups

from ript_robot.config import RIPTConfig
from ript_robot.rl.ppo import build_batch


@pytest.mark.parametrize("family, fsdp", [("chunked", False), ("quest", False), ("chunked", True), ("oft", True)])
def test_two_gloo_ranks_make_the_same_update_as_one_process(tmp_path: Path, family: str, fsdp: bool) -> None:
    """Whole copies with summed gradients, or FSDP shards (the oft policy's transformer blocks each a unit)."""
    policy = tiny_policy(seed=0, family=family)
    batch = build_batch(policy, _rollout_groups(policy))
    assert batch is not None and len(batch) >= 8
    # minibatches of an odd size: the two ranks score unequal shares and unequal numbers of actions
    config = RIPTConfig(ppo_epochs=2, minibatch_size=3)
    inputs = tmp_path / "inputs.pt"
    torch.save((str(policy.save(tmp_path / "policy")), batch, config), inputs)

    reference = copy.deepcopy(policy)
    expected = update(reference, batch, config)
    mp.spawn(rank_main, args=(2, str(tmp_path / "rendezvous"), str(inputs), str(tmp_path / "out.pt"), fsdp), nprocs=2)
    result = torch.load(tmp_path / "out.pt", weights_only=False)
    # a group kept alive past destroy_process_group left its gloo threads to die with the interpreter,
    # which aborted a rank now and then (SIGABRT after its work was done). Sharded, DTensor's global
    # sharding caches hold the group's mesh whatever we do, so only whole copies are held to this.
    if not fsdp:
        assert not [name for name in result["threads_left"] if "gloo" in name], result["threads_left"]

    moved = [k for k, v in reference.state_dict().items() if not torch.equal(v, policy.state_dict()[k])]
    assert moved, "the update should change the policy"
    assert result["state"].keys() == reference.checkpoint_state().keys()
    for key, value in reference.checkpoint_state().items():
        torch.testing.assert_close(result["state"][key], value, atol=1e-6, rtol=1e-5, msg=key)
    for key in ("loss", "approx_kl", "clipfrac", "ratio_mean", "grad_norm", "initial_ratio_error", "minibatches"):
        assert result["stats"][key] == pytest.approx(expected[key], abs=1e-6, rel=1e-5), key
