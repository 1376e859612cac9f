"""`ript train` under torchrun: rank 0 trains from the store, the other ranks update alongside in step."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.multiprocessing as mp
from data_parallel_ranks import ITERATIONS, rank_main

from ript_robot.data import EpisodeStore
from ript_robot.data.checkpoints import load_published, published_versions


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
