"""A trainer in a subprocess that is killed in the middle of its first PPO update.

usage: python trainer_worker.py URI
It prints the ids of the episodes it is training on, then UPDATING, and hangs in the update.
"""

from __future__ import annotations

import json
import sys
import time

from fake_fleet import contexts
from test_service import ript_config, trainer_config

import ript_robot.train.service as service
from ript_robot.data import EpisodeStore


def hang(*args: object, **kwargs: object) -> None:
    print("UPDATING", flush=True)
    time.sleep(600)


def main() -> None:
    original = service.StoreTrainer._update

    def announce(self: service.StoreTrainer, version: int, accepted: list, *rest: object) -> object:
        print(json.dumps(sorted(r.episode_id for g in accepted for r in g.members)), flush=True)
        return original(self, version, accepted, *rest)

    service.StoreTrainer._update = announce  # type: ignore[method-assign]
    service.ppo_update = hang  # type: ignore[assignment]
    trainer = service.StoreTrainer(EpisodeStore(sys.argv[1]), contexts(8), ript_config(), trainer_config())
    trainer.start()
    trainer.run(1, progress=False)


if __name__ == "__main__":
    main()
