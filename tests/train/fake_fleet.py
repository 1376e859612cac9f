"""A stand-in fleet for the trainer's tests: claims scheduled slots and commits labeled rollouts.

The rollouts are synthetic (random images, the tiny policy's shapes) with a success rate
chosen per context, so a test decides which groups are informative; everything else (the
schedule, the claims, the writer, the store) is the real thing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
from synthetic import synthetic_episode

from ript_robot.data import EpisodeStore
from ript_robot.data.checkpoints import latest_version
from ript_robot.data.schedule import Schedule
from ript_robot.types import Context, Label

CHUNK = 4  # the tiny policy's chunk size (tests/conftest.py), images of its 32x32 size


def contexts(n: int) -> list[Context]:
    return [Context(f"scene/task/{i}", "pick up the red block", i, "scene") for i in range(n)]


def success_rate(context_id: str) -> float:
    """Contexts 0 and 1 always succeed (their groups carry no signal); the rest half the time."""
    return 1.0 if context_id.endswith(("/0", "/1")) else 0.5


class FakeFleet(threading.Thread):
    """Runs until the schedule is done or `stop()`."""

    def __init__(
        self,
        uri: str,
        rate: Callable[[str], float] = success_rate,
        damage: Callable[[EpisodeStore, str], None] | None = None,
    ):
        """damage: called on each committed rollout before its label is given (a store fault between the two)."""
        super().__init__(daemon=True)
        self.uri, self.rate, self.damage = uri, rate, damage
        self.rng = np.random.default_rng(0)
        self.episodes = 0
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def run(self) -> None:
        store = EpisodeStore(self.uri)
        schedule = Schedule(store.backend)
        with store.writer() as writer:
            while not schedule.finished() and not self._stop_event.is_set():
                version = latest_version(store.backend)
                slots = [] if version is None else schedule.claim(version, "fake", 16)
                labels = []
                for slot in slots:
                    success = bool(self.rng.random() < self.rate(slot.context.context_id))
                    seed = int(self.rng.integers(1 << 30))
                    episode = synthetic_episode(
                        steps=2 * CHUNK,
                        chunk_size=CHUNK,
                        success=success,
                        version=version,
                        seed=seed,
                        image_size=32,
                    )
                    episode.meta.context = slot.context
                    episode.meta.slot_id, episode.meta.sampling = slot.slot_id, "sampled"
                    if self.damage is not None:  # commit unlabeled, damage, then label: the trainer waits for it
                        labels.append((episode.meta.episode_id, episode.meta.label))
                        episode.meta.label = None
                    store.write_episode(episode, writer)
                    self.episodes += 1
                writer.flush()
                for episode_id, label in labels:
                    self.damage(store.refresh(), episode_id)
                    store.add_label(episode_id, Label(label.success, "sim"))
                if not slots:
                    time.sleep(0.05)
