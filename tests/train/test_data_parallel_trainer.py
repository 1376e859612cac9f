"""`ript train` under torchrun: rank 0 trains from the store, the other ranks update alongside in step."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.multiprocessing as mp
from data_parallel_ranks import ITERATIONS, rank_main

from ript_robot.data import EpisodeStore
from ript_robot.data.checkpoints import published_versions, read_manifest
from ript_robot.policies.published import load_published, read_optimizer


def test_a_follower_rank_ends_with_the_weights_rank_0_published(tmp_path: Path) -> None:
    store_uri, out = tmp_path / "store", tmp_path / "rank1.pt"
    mp.spawn(rank_main, args=(2, str(tmp_path / "rendezvous"), str(store_uri), str(out)), nprocs=2)
    store = EpisodeStore(store_uri)
    assert published_versions(store.backend) == list(range(ITERATIONS + 1))
    follower = torch.load(out)
    assert follower["updates"] == ITERATIONS
    published = load_published(store.backend, ITERATIONS).state_dict()
    first = load_published(store.backend, 0).state_dict()
    assert any(not torch.equal(first[k], v) for k, v in published.items()), "the updates should change the policy"
    for key, value in published.items():  # the summed gradients reach every rank: they never drift apart
        torch.testing.assert_close(follower["state"][key], value, atol=0, rtol=0, msg=key)


def test_sharded_ranks_publish_every_version_and_resume_with_the_saved_adam_state(tmp_path: Path) -> None:
    """trainer.fsdp: the weights and Adam moments live in slices on two ranks; rank 0 publishes them gathered
    whole, and a restarted pair resumes from them."""
    store_uri = tmp_path / "store"
    for run in (1, 2):  # the second run resumes the store the first left at version ITERATIONS
        target = ITERATIONS * run
        rendezvous, out = str(tmp_path / f"rendezvous{run}"), str(tmp_path / f"rank1-{run}.pt")
        mp.spawn(rank_main, args=(2, rendezvous, str(store_uri), out, True, target), nprocs=2)
        assert torch.load(out)["updates"] == ITERATIONS
    store = EpisodeStore(store_uri)
    assert published_versions(store.backend) == list(range(2 * ITERATIONS + 1))
    first, last = load_published(store.backend, 0).state_dict(), load_published(store.backend).state_dict()
    assert first.keys() == last.keys() and any(not torch.equal(first[k], v) for k, v in last.items())
    # Adam's step count went on from where the first run saved it: its moments were restored, not reset
    steps = {
        v: {float(s["step"]) for s in read_optimizer(store.backend, v).values()} for v in (ITERATIONS, 2 * ITERATIONS)
    }
    second_run = sum(
        read_manifest(store.backend, v)["metrics"]["minibatches"] for v in range(ITERATIONS + 1, 2 * ITERATIONS + 1)
    )
    assert len(steps[ITERATIONS]) == len(steps[2 * ITERATIONS]) == 1
    assert steps[2 * ITERATIONS].pop() == steps[ITERATIONS].pop() + second_run
