"""The ranks of the data-parallel trainer test: rank 0 trains from a fake fleet, rank 1 follows it."""

from __future__ import annotations

import torch
import torch.distributed as dist
from conftest import tiny_policy
from fake_fleet import FakeFleet, contexts
from test_service import ript_config, trainer_config

from ript_robot.data import EpisodeStore
from ript_robot.rl.distributed import barrier
from ript_robot.train.service import StoreTrainer

ITERATIONS = 2


def rank_main(rank: int, world: int, rendezvous: str, store_uri: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        if rank == 0:
            trainer = StoreTrainer(EpisodeStore(store_uri, create=True), contexts(8), ript_config(), trainer_config())
            fleet = FakeFleet(store_uri)
            fleet.start()
            trainer.start(tiny_policy())
            barrier()
            trainer.run(ITERATIONS, progress=False)
            fleet.join(timeout=30)
        else:
            barrier()  # as `ript train` does: the store and version 0 exist once rank 0 started
            trainer = StoreTrainer(EpisodeStore(store_uri), contexts(8), ript_config(), trainer_config())
            trainer.start()
            updates = trainer.follow()
            torch.save({"updates": updates, "state": trainer.policy.state_dict()}, out)
    finally:
        dist.destroy_process_group()
