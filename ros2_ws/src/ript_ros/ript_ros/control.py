"""One episode on the arm: a command every control period from the chunk queue, planning beside it.

`EpisodeRunner.period` is what the control loop calls once per period. It takes the chunk
the inference worker finished (if any), executes the next planned action through the shared
`EpisodeController` (safety filter, step log), and hands the worker the observation to plan
the next chunk from once the current chunk is `plan_ahead_steps` short of its switch point
(`runtime.execute_steps`). The new chunk takes over at the switch point, or as soon as it
arrives when it is late; when the current chunk is used up first, the arm holds (never an
extrapolated action). RIPT's bookkeeping stays exact: every executed action is one of a
stored chunk, whose observation is the one the policy saw (`planned_step`), and the actions
a chunk never executed stay masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ript_robot.runtime.inference import InferenceWorker, Planned
from ript_robot.runtime.loop import FAULT_REASON, EpisodeController
from ript_robot.types import Context, EpisodeMeta, Label, Observation

SLOT = 0  # one arm: one episode slot of the controller


@dataclass
class Period:
    """What one control period decided: a command to send (and the chunk's next actions), a hold, or a fault."""

    command: np.ndarray | None = None
    future: np.ndarray | None = None
    hold: str = ""  # why the arm holds this period ("" when a command goes out)
    fault: str = ""  # the episode must end: why
    replanning: bool = False  # a chunk was adopted, submitted or being planned beside this period


class EpisodeRunner:
    """Runs the episodes of one arm on the shared controller with an inference worker beside it."""

    def __init__(self, controller: EpisodeController, worker: InferenceWorker, plan_ahead_steps: int):
        """plan_ahead_steps: start planning this many steps before the switch point (>= 0)."""
        self.controller = controller
        self.worker = worker
        self.plan_ahead_steps = plan_ahead_steps
        self.pending: Planned | None = None  # a finished chunk waiting for its switch point
        self.late_periods = 0  # periods held because the next chunk was not ready
        self.plan_seconds: list[float] = []

    @property
    def running(self) -> bool:
        return SLOT in self.controller.metas

    @property
    def steps(self) -> int:
        return self.controller.step_of(SLOT) if self.running else 0

    def begin(self, context: Context, slot_id: str | None = None) -> EpisodeMeta:
        """Start an episode on `context`, filling schedule slot `slot_id` (None: unscheduled)."""
        self._drop_plans()
        return self.controller.begin(SLOT, context, slot_id)

    def period(self, observation: Observation | None, person: np.ndarray | None = None) -> Period:
        """One control period; `observation` is None while an input is stale (then the arm holds); `person`: a
        person's command this period (teleoperation), executed instead of the policy's. When the person lets
        go, the policy plans from the newest observation (the arm holds until that chunk comes)."""
        c = self.controller
        planned = self.worker.poll()
        if planned is not None:
            if planned.error is not None:
                return Period(fault=f"fault: policy error: {type(planned.error).__name__}: {planned.error}")
            self.pending = planned
            self.plan_seconds.append(planned.seconds)
        if observation is None:
            return Period(hold="stale input")
        if person is not None:
            if not c.intervening(SLOT):  # the policy's queue is cleared: nothing it planned runs after the takeover
                self._drop_plans()
            command, fault = c.intervene(SLOT, observation, person)
            return Period(fault=FAULT_REASON) if fault else Period(command=command)
        if c.intervening(SLOT):
            c.release(SLOT)
            self._drop_plans()
        step = c.step_of(SLOT)
        adopted = self.pending is not None and (not c.can_step(SLOT) or c.position_of(SLOT) >= c.config.execute_steps)
        if adopted:
            p, self.pending = self.pending, None
            assert p.chunk is not None
            c.adopt(SLOT, p.chunk, p.observation, p.planned_step)
            if p.planned_step == step:  # planned before the episode's first step: that step is its observation
                observation = p.observation
        if not c.can_step(SLOT):
            if not self.worker.busy and self.pending is None:
                self.worker.submit(observation, step)  # the first chunk: the arm holds until it comes
            if step:
                self.late_periods += 1
            return Period(hold="waiting for the policy's chunk")
        plan_now = self.pending is None and not self.worker.busy and c.needs_plan(SLOT, self.plan_ahead_steps)
        replanning = adopted or plan_now or self.worker.busy
        command, fault = c.step(SLOT, observation, keep_frame=plan_now)
        if plan_now:
            self.worker.submit(observation, step)
        if fault:
            return Period(fault=FAULT_REASON)
        return Period(command=command, future=c.remaining_actions(SLOT), replanning=replanning)

    def _drop_plans(self) -> None:
        """Forget the chunk being planned and the one waiting: nothing the policy planned so far runs."""
        self.worker.cancel()
        self.pending = None

    def finish(self, reason: str, label: Label | None) -> EpisodeMeta:
        self._drop_plans()
        return self.controller.finish(SLOT, reason, label)
