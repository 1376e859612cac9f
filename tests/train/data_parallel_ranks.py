"""The ranks of the data-parallel trainer test: rank 0 trains from a fake fleet, rank 1 follows it."""

from __future__ import annotations

import torch
import torch.distributed as dist
from conftest import tiny_policy
from fake_fleet import FakeFleet, contexts
from test_service import ript_config, trainer_config

from ript_robot.data import EpisodeStore
from ript_robot.rl.distributed import barrier, membership
from ript_robot.train.service import StoreTrainer

ITERATIONS = 2


def rank_main(
    rank: int, world: int, rendezvous: str, store_uri: str, out: str, fsdp: bool = False, until: int = ITERATIONS
) -> None:
    """One rank: rank 0 trains (resuming the store if it has a policy) until version `until`, rank 1 follows."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    config = trainer_config().model_copy(update={"fsdp": fsdp})
    with membership():
        if rank == 0:
            trainer = StoreTrainer(EpisodeStore(store_uri, create=True), contexts(8), ript_config(), config)
            barrier()
            trainer.start(tiny_policy())  # the ranks start together, from what rank 0 publishes
            if trainer.schedule.finished():  # a resumed store: its last run marked the schedule done
                trainer.schedule.reopen()
            fleet = FakeFleet(store_uri)
            fleet.start()
            trainer.run(until, progress=False)
            fleet.join(timeout=30)
        else:
            barrier()  # as `ript train` does: the store exists once rank 0 made its trainer
            trainer = StoreTrainer(EpisodeStore(store_uri), contexts(8), ript_config(), config)
            trainer.start()
            updates = trainer.follow()
            state = {} if fsdp else trainer.policy.state_dict()  # sharded: rank 0 published the gathered whole
            torch.save({"updates": updates, "state": state}, out)
