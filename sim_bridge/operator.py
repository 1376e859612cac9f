"""A labeling operator who behaves like one: the person at the tablet, scripted for tests and benchmarks.

`ScriptedOperator` labels the rollouts a simulated actor commits unlabeled (`run_actor(outcomes=...)`
keeps the simulator's verdict aside, as the scene in front of a person), through the same
`LabelDesk` the tablet uses, and as people do: each label comes `delay_s` after the episode
ended, some much later (the operator was busy), some with the wrong button first and an undo
inside the undo window, a few wrong and corrected only after an update trained on them, and
now and then a discard (a disturbed scene). It keeps a log of what it did, so a test can check
the trainer against it.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ript_robot.data.store import EpisodeStore
from ript_robot.data.usage import TrainingUse
from ript_robot.runtime.timing import WallClock
from ript_robot.success.labels import LabelDesk, LabelError
from ript_robot.types import Label


@dataclass(frozen=True)
class OperatorConfig:
    """How the scripted operator behaves; times are seconds of its clock."""

    delay_s: tuple[float, float] = (5.0, 120.0)  # from an episode's end to the label, uniform
    skip_share: float = 0.1  # episodes left for a while (the operator was busy elsewhere)
    skip_s: tuple[float, float] = (60.0, 240.0)  # how much longer those wait
    mistap_share: float = 0.1  # the wrong button first, undone inside the window, then the right one
    undo_after_s: tuple[float, float] = (1.0, 8.0)  # from the mis-tap to its undo (inside the 10 s window)
    late_corrections: int = 2  # labels given wrong and corrected only after an update used them
    discard_share: float = 0.02  # episodes discarded instead of labeled
    undo_window_s: float = 10.0  # the tablet's window
    poll_s: float = 1.0  # how often the operator looks at the queue


class ScriptedOperator(threading.Thread):
    """Labels every rollout in `outcomes` as it is committed, until `stop()`."""

    def __init__(
        self,
        store_uri: str,
        outcomes: dict[str, Label],
        clock: WallClock,
        config: OperatorConfig | None = None,
        seed: int = 0,
        name: str = "operator",
    ):
        """outcomes: episode id -> the simulator's label, filled by the actor as it commits."""
        super().__init__(daemon=True, name=name)
        self.store = EpisodeStore(store_uri, create=False)
        self.outcomes, self.clock, self.config, self.who = outcomes, clock, config or OperatorConfig(), name
        self.desk = LabelDesk(self.store, self.config.undo_window_s, clock.time)
        self.rng = np.random.default_rng(seed)
        self.use = TrainingUse(self.store.backend)
        self.plans: dict[str, list[tuple[float, str]]] = {}  # episode -> (due time, action) still to do
        self.log: Counter[str] = Counter()  # what it did: label, mistap, undo, discard, late_wrong, correction
        self.delays: list[float] = []  # seconds from seeing an episode to its first label, discard or mis-tap
        self.errors: list[str] = []  # refusals it did not expect (a test asserts there are none)
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self._look()
            except Exception as exc:  # a person keeps going; the test sees what went wrong
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.clock.sleep(self.config.poll_s)

    def _look(self) -> None:
        """One look at the queue: plan new episodes, do what is due."""
        self.store.refresh()
        now = self.clock.time()
        for record in self.store.records():
            if record.episode_id in self.outcomes and record.episode_id not in self.plans:
                self.plans[record.episode_id] = self._plan(now)
        for episode_id, plan in self.plans.items():
            while plan and plan[0][0] <= now and self._do(episode_id, plan[0][1]):
                plan.pop(0)

    def _plan(self, seen: float) -> list[tuple[float, str]]:
        """What to do with a newly committed episode, and when."""
        c, rng = self.config, self.rng
        at = seen + rng.uniform(*c.delay_s)
        if rng.random() < c.skip_share:
            at += rng.uniform(*c.skip_s)
        self.delays.append(at - seen)
        if self.log["late_wrong"] < c.late_corrections:
            self.log["late_wrong"] += 1
            return [(at, "wrong"), (at, "correct_after_training")]
        if rng.random() < c.discard_share:
            return [(at, "discard")]
        if rng.random() < c.mistap_share:
            undo = at + rng.uniform(*c.undo_after_s)
            return [(at, "mistap"), (undo, "undo"), (undo + rng.uniform(1.0, 5.0), "label")]
        return [(at, "label")]

    def _do(self, episode_id: str, action: str) -> bool:
        """One step of a plan; False to try it again later (a correction waits for training to use the label)."""
        truth = self.outcomes[episode_id].success
        if action == "correct_after_training":
            if episode_id not in self.use.refresh().uses:
                return False
            action = "correction"
        revision = self.desk.state(episode_id).revision  # the card the operator looks at
        try:
            if action in ("label", "correction"):
                self.desk.label(episode_id, truth, self.who, revision)
            elif action in ("mistap", "wrong"):
                self.desk.label(episode_id, not truth, self.who, revision)
            elif action == "undo":
                self.desk.undo(episode_id, self.who, revision)
            else:
                self.desk.discard(episode_id, self.who, revision)
        except LabelError as exc:
            self.errors.append(f"{action}: {exc}")
            return True
        self.log[action] += 1
        return True
