"""The policy node's phases and the only transitions between them, in one table.

An arm's episode is a sequence: find the next context, home the arm, wait for the operator
to confirm the scene, run, wait for the outcome, commit. Every change of phase goes through
`PhaseMachine.to`, which refuses a transition the table does not list (a bug, reported with
both phases), so "a start while homing" or "a weight swap while running" cannot happen by
an overlooked branch. The value of each phase is what `~/episode_status` reports.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import Enum


class Phase(str, Enum):
    UNCONFIGURED = "unconfigured"  # no policy loaded
    INACTIVE = "inactive"  # configured; the lifecycle node is not active
    IDLE = "idle"  # looking for the next context (and a newer policy)
    WAITING = "waiting"  # nothing to do yet: no scheduled work or no instruction
    RESETTING = "resetting"  # opening the gripper, retreating, moving home
    READY = "ready"  # at home: the operator confirms the scene and starts
    RUNNING = "running"  # the episode runs: commands every control period
    ENDING = "ending"  # max steps reached: the arm holds, waiting for the outcome
    SAVING = "saving"  # the episode ended; the writer commits it
    STOPPED = "stopped"  # the software stop is latched
    DONE = "done"  # the trainer marked the schedule done


BETWEEN_EPISODES = {Phase.IDLE, Phase.WAITING, Phase.RESETTING, Phase.READY}
EPISODE = {Phase.RUNNING, Phase.ENDING}

_ANYWHERE = {Phase.STOPPED, Phase.INACTIVE, Phase.UNCONFIGURED}
TRANSITIONS: dict[Phase, set[Phase]] = {
    Phase.UNCONFIGURED: {Phase.INACTIVE, Phase.UNCONFIGURED, Phase.STOPPED},
    Phase.INACTIVE: {Phase.IDLE} | _ANYWHERE,
    Phase.IDLE: {Phase.IDLE, Phase.WAITING, Phase.RESETTING, Phase.READY, Phase.DONE} | _ANYWHERE,
    Phase.WAITING: {Phase.IDLE, Phase.WAITING, Phase.RESETTING, Phase.READY, Phase.DONE} | _ANYWHERE,
    Phase.RESETTING: {Phase.READY, Phase.WAITING, Phase.RESETTING} | _ANYWHERE,
    Phase.READY: {Phase.RUNNING, Phase.RESETTING, Phase.WAITING, Phase.READY, Phase.IDLE} | _ANYWHERE,
    Phase.RUNNING: {Phase.ENDING, Phase.SAVING},
    Phase.ENDING: {Phase.SAVING},
    Phase.SAVING: {Phase.IDLE} | _ANYWHERE,
    Phase.STOPPED: {Phase.IDLE, Phase.STOPPED, Phase.INACTIVE, Phase.UNCONFIGURED},
    Phase.DONE: {Phase.DONE, Phase.IDLE} | _ANYWHERE,
}


class IllegalTransition(RuntimeError):
    """A phase change the table does not allow: a bug in the node, never the operator's fault."""


class PhaseMachine:
    """The current phase and its message; `to` checks the table and notifies `on_change`."""

    def __init__(self, on_change: Callable[[Phase, str], None] | None = None):
        self.phase = Phase.UNCONFIGURED
        self.message = ""
        self.on_change = on_change
        self.lock = threading.RLock()  # held by whoever reads a phase and acts on it

    def to(self, phase: Phase, message: str) -> None:
        with self.lock:
            if phase not in TRANSITIONS[self.phase]:
                raise IllegalTransition(f"the policy node cannot go from {self.phase.value} to {phase.value}")
            self.phase, self.message = phase, message
        if self.on_change is not None:
            self.on_change(phase, message)

    def is_in(self, *phases: Phase) -> bool:
        return self.phase in phases
