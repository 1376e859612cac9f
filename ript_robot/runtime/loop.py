"""The one control loop: observation -> policy -> safety filter -> env, shared by robot and sim.

`EpisodeController` is the tick logic (plan, filter, log) that the ROS policy node and the
simulated rollouts share. `run_episodes` drives N envs in lock step (N = 1 on a robot, N > 1 for simulated rollouts)
so each tick makes one batched policy call for the envs that need a new chunk. A chunk is
executed open-loop for `execute_steps` steps, then the policy re-plans from the newest
observation. Every tick goes to an `EpisodeSink` (the in-memory buffer here; the episode
store's writer later), and each episode ends with the env's success label when the env
knows it (a simulator) or unlabeled when it does not (a real arm).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np

from ript_robot.config import RuntimeConfig
from ript_robot.envs.base import RobotEnv
from ript_robot.policies.base import Policy
from ript_robot.runtime.safety import SafetyFilter
from ript_robot.types import ActionChunk, Context, Episode, EpisodeMeta, Label, Observation, StepRecord


class EpisodeSink(Protocol):
    """Receives an episode as it happens. Implementations must not block the control tick."""

    def begin(self, meta: EpisodeMeta) -> None: ...

    def add_chunk(
        self, episode_id: str, chunk: ActionChunk, observation: Observation, planned_step: int | None = None
    ) -> None:
        """A chunk the episode executes from its next step on, planned from `observation`: the
        observation of step `planned_step` (an earlier step when planned ahead), or of that next step."""

    def add_step(self, episode_id: str, record: StepRecord) -> None: ...

    def end(self, meta: EpisodeMeta, final: Observation | None = None) -> None:
        """The episode ended; `final`, when given, is the scene after its last step (its outcome)."""


class EpisodeBuffer:
    """An `EpisodeSink` that keeps finished episodes in memory (the in-process trainer's store)."""

    def __init__(self) -> None:
        self._open: dict[str, Episode] = {}
        self.episodes: list[Episode] = []

    def begin(self, meta: EpisodeMeta) -> None:
        self._open[meta.episode_id] = Episode(meta=meta, steps=[], chunks=[], chunk_observations=[])

    def add_chunk(
        self, episode_id: str, chunk: ActionChunk, observation: Observation, planned_step: int | None = None
    ) -> None:
        episode = self._open[episode_id]
        episode.chunks.append(chunk)
        episode.chunk_observations.append(observation)

    def add_step(self, episode_id: str, record: StepRecord) -> None:
        self._open[episode_id].steps.append(record)

    def end(self, meta: EpisodeMeta, final: Observation | None = None) -> None:
        episode = self._open.pop(meta.episode_id)
        episode.final = final
        self.episodes.append(episode)


Command = tuple[np.ndarray, bool]  # (safety-filtered command, fault: hold the arm and end the episode)
Takeover = Callable[[int, "np.ndarray | None"], "np.ndarray | None"]  # (slot, proposed action) -> command or None


class Intervener(Protocol):
    """A person watching a simulated episode, or a script playing one: given the env and the action the policy
    would execute next (None while the intervener is in control), the command to execute instead, or None to
    leave control to the policy (or hand it back). On an arm the teleoperation input plays this part."""

    def __call__(self, env: RobotEnv, proposed: np.ndarray | None) -> np.ndarray | None: ...


class EpisodeController:
    """The tick logic of the one control loop, for N episodes in lock step (N = 1 on a robot).

    Each tick it plans a new chunk (one batched policy call) for the episodes due to
    re-plan, takes each episode's next action through the safety filter, and logs the step
    to every sink. Where observations come from and where commands go is the caller's
    business: `run_episodes` steps simulators, the ROS policy node publishes to an arm.
    The policy is fixed while episodes run: `set_policy` between episodes only.
    """

    def __init__(
        self,
        policy: Policy,
        config: RuntimeConfig,
        safety: SafetyFilter,
        sinks: Sequence[EpisodeSink],
        robot_id: str = "sim",
        deterministic: bool = False,
    ):
        self.config = config
        self.safety = safety
        self.sinks = list(sinks)
        self.robot_id = robot_id
        self.deterministic = deterministic
        self.metas: dict[int, EpisodeMeta] = {}
        self._steps: dict[int, int] = {}
        self._chunks: dict[int, ActionChunk] = {}
        self._chunk_counts: dict[int, int] = {}
        self._position: dict[int, int] = {}  # index of the next action in the slot's current chunk
        self._previous: dict[int, np.ndarray] = {}
        self._intervening: set[int] = set()  # slots a person commands now
        self.plan_seconds = 0.0  # time the last tick spent in the policy (0 when it did not re-plan)
        self.policy = policy
        self.set_policy(policy)

    def set_policy(self, policy: Policy) -> None:
        """Swap the policy; refused while an episode runs (never a weight swap mid-episode)."""
        if self.metas:
            raise RuntimeError(f"cannot swap the policy while {len(self.metas)} episode(s) run; swap between episodes")
        if self.config.execute_steps > policy.chunk_size:
            raise ValueError(
                f"runtime.execute_steps ({self.config.execute_steps}) exceeds the policy's chunk size "
                f"({policy.chunk_size})"
            )
        self.policy = policy

    def begin(self, slot: int, context: Context, slot_id: str | None = None) -> EpisodeMeta:
        """Start an episode in `slot` (its env already reset to `context`); `slot_id`: the schedule
        slot it fills (None for unscheduled runs, which RIPT never learns from)."""
        if slot in self.metas:
            raise RuntimeError(f"slot {slot} already runs episode {self.metas[slot].episode_id}")
        meta = EpisodeMeta(
            episode_id=uuid.uuid4().hex,
            context=context,
            policy_version=self.policy.version,
            robot_id=self.robot_id,
            start_time=time.time(),
            sampling="deterministic" if self.deterministic else "sampled",
            slot_id=slot_id,
        )
        self.metas[slot] = meta
        self._steps[slot] = 0
        self._chunk_counts[slot] = 0
        for s in self.sinks:
            s.begin(meta)
        return meta

    def step_of(self, slot: int) -> int:
        """Steps the episode in `slot` has taken."""
        return self._steps[slot]

    def frame_due(self, step: int) -> bool:
        """Whether the observation of `step` needs its camera images: the policy re-plans from it,
        or the episode log keeps its frame (every `frame_every` steps). Simulators render only then."""
        every = self.config.frame_every
        return step % self.config.execute_steps == 0 or (every > 0 and step % every == 0)

    def needs_plan(self, slot: int, lead: int = 0) -> bool:
        """Whether the episode in `slot` should plan its next chunk now: it has none, or its current
        chunk is within `lead` steps of the planned switch point (`execute_steps`)."""
        if slot not in self._chunks:
            return True
        return self._position[slot] >= self.config.execute_steps - lead

    def plan(self, observations: dict[int, Observation]) -> dict[int, ActionChunk]:
        """One batched policy call for the given slots; the chunks are not adopted (see `adopt`)."""
        blind = [self.metas[i].episode_id for i, o in observations.items() if not o.images]
        if blind:
            raise ValueError(f"episodes {blind} re-plan from an observation without camera images")
        started = time.perf_counter()
        chunks = self.policy.act(list(observations.values()), deterministic=self.deterministic)
        self.plan_seconds = time.perf_counter() - started
        return dict(zip(observations, chunks, strict=True))

    def adopt(self, slot: int, chunk: ActionChunk, observation: Observation, planned_step: int | None = None) -> None:
        """Make `chunk` the one `slot` executes next, from its first action. It was planned from
        `observation`, which is the observation recorded at step `planned_step` (default: the
        next step). The rest of the previous chunk is dropped: its unexecuted actions stay masked."""
        self._chunks[slot] = chunk
        self._position[slot] = 0
        self._chunk_counts[slot] += 1
        for s in self.sinks:
            s.add_chunk(self.metas[slot].episode_id, chunk, observation, planned_step)

    def position_of(self, slot: int) -> int:
        """Actions of the current chunk `slot` has executed (0 before its first chunk)."""
        return self._position.get(slot, 0)

    def remaining_actions(self, slot: int) -> np.ndarray:
        """The current chunk's actions not executed yet, as sampled (H', A)."""
        chunk = self._chunks.get(slot)
        return (
            np.zeros((0, self.safety.hold.size), np.float32) if chunk is None else chunk.actions[self._position[slot] :]
        )

    def can_step(self, slot: int) -> bool:
        """Whether `slot` has a planned action left to execute (if not, the arm must hold)."""
        chunk = self._chunks.get(slot)
        return chunk is not None and self._position[slot] < len(chunk.actions)

    def step(self, slot: int, observation: Observation, keep_frame: bool = False) -> Command:
        """Execute the next action of `slot`'s chunk: safety-filter it, log the step, return the command.

        keep_frame: log this step's camera frames even when `frame_due` would not (a chunk is planned from it)."""
        step, position = self._steps[slot], self._position[slot]
        action = self._chunks[slot].actions[position]
        command, clipped, fault = self.safety(action, observation.state, self._previous.get(slot))
        # beyond the policy's own bounds (rate, step, workspace, keep-out, narrower safety bounds): not credited
        limited = clipped and not np.allclose(command, self.policy.sent(action), rtol=0.0, atol=1e-6)
        record = StepRecord(
            step=step,
            timestamp=time.time(),
            observation=observation if keep_frame or self.frame_due(step) else replace(observation, images={}),
            action=command,
            chunk_index=self._chunk_counts[slot] - 1,
            safety_clipped=clipped,
            safety_limited=limited,
        )
        for s in self.sinks:
            s.add_step(self.metas[slot].episode_id, record)
        self._steps[slot] = step + 1
        self._position[slot] = position + 1
        self._previous[slot] = command
        return command, fault

    def intervene(self, slot: int, observation: Observation, command: np.ndarray) -> Command:
        """Execute a person's `command` for `slot` instead of the policy's next action: the same safety filter,
        logged as an intervened step (with its frames, for imitation); the policy's chunk is dropped, so when
        the person lets go (`release`) it re-plans from the newest observation."""
        step = self._steps[slot]
        if slot not in self._intervening:
            self._intervening.add(slot)
            self.metas[slot].interventions += 1
            self._chunks.pop(slot, None)
        filtered, clipped, fault = self.safety(
            np.asarray(command, np.float32), observation.state, self._previous.get(slot)
        )
        record = StepRecord(
            step, time.time(), observation, filtered, self._chunk_counts[slot] - 1, clipped, clipped, intervened=True
        )
        for s in self.sinks:
            s.add_step(self.metas[slot].episode_id, record)
        self.metas[slot].intervened_steps += 1
        self._steps[slot] = step + 1
        self._previous[slot] = filtered
        return filtered, fault

    def release(self, slot: int) -> None:
        """The person let go of `slot`: the policy plans its next step (no-op when nobody was in control)."""
        self._intervening.discard(slot)

    def intervening(self, slot: int) -> bool:
        """Whether a person commands `slot` now."""
        return slot in self._intervening

    def tick(self, observations: dict[int, Observation], takeover: Takeover | None = None) -> dict[int, Command]:
        """One lock-step tick for the given running slots: re-plan those due (one batched policy
        call), then execute each slot's next action, or the command `takeover` gives instead (it sees
        the proposed action, None while it is in control; returning None hands control back, and the
        policy re-plans from this observation). What the simulated rollouts run."""
        commands = {}
        for i in [i for i in observations if self.intervening(i)]:  # in the person's hands: keep, or hand back
            command = takeover(i, None) if takeover is not None else None
            if command is None:
                self.release(i)  # the policy plans from this observation, with the others due
            else:
                commands[i] = self.intervene(i, observations[i], command)
        due = {i: o for i, o in observations.items() if i not in commands and self.needs_plan(i)}
        self.plan_seconds = 0.0
        if due:
            for i, chunk in self.plan(due).items():
                self.adopt(i, chunk, due[i])
        for i, observation in observations.items():
            if i in commands:
                continue
            command = None if takeover is None else takeover(i, self._chunks[i].actions[self._position[i]])
            commands[i] = self.step(i, observation) if command is None else self.intervene(i, observation, command)
        return commands

    def finish(
        self, slot: int, reason: str, label: Label | None = None, final: Observation | None = None
    ) -> EpisodeMeta:
        """End the episode in `slot` with `reason` and, when known, its label; the sinks commit it.

        final: the observation after the last step, when it has camera images: the log keeps its
        frames as the episode's outcome (what a success detector and the operator look at)."""
        meta = self.metas.pop(slot)
        meta.end_time = time.time()
        meta.num_steps = self._steps.pop(slot)
        meta.end_reason = reason
        meta.label = label
        self._chunks.pop(slot, None)
        self._position.pop(slot, None)
        self._chunk_counts.pop(slot)
        self._previous.pop(slot, None)
        self._intervening.discard(slot)
        for s in self.sinks:
            s.end(meta, final if final is not None and final.images else None)
        return meta


FAULT_REASON = "fault: non-finite action, arm held"


def run_episodes(
    envs: Sequence[RobotEnv],
    contexts: Sequence[Context],
    policy: Policy,
    config: RuntimeConfig,
    sink: EpisodeSink | None = None,
    deterministic: bool = False,
    robot_id: str = "sim",
    safety: SafetyFilter | None = None,
    on_step: Callable[[int], None] | None = None,
    slot_ids: Sequence[str | None] | None = None,
    intervener: Intervener | None = None,
) -> list[Episode]:
    """Run one episode per (env, context) pair in lock step and return them, in order.

    sink: also receives every chunk and step (the returned episodes come from an internal
    buffer either way). on_step(n_active): called once per tick, e.g. for a progress bar.
    slot_ids: the schedule slot each episode fills (default: none). intervener: who may take
    over an episode (a scripted operator; while in control every step is rendered, so its
    steps keep frames to imitate). A fault (a non-finite action) ends the episode as a
    failure: the simulator knows it did not succeed.
    """
    if len(envs) != len(contexts):
        raise ValueError(f"{len(envs)} envs but {len(contexts)} contexts: give one context per env")
    slot_ids = [None] * len(contexts) if slot_ids is None else list(slot_ids)
    if len(slot_ids) != len(contexts):
        raise ValueError(f"{len(slot_ids)} slot ids for {len(contexts)} contexts: give one per context")
    if not envs:
        return []
    spec = envs[0].spec
    safety = safety or SafetyFilter(config.safety, spec.action_dim)
    buffer = EpisodeBuffer()
    controller = EpisodeController(
        policy, config, safety, [buffer] if sink is None else [buffer, sink], robot_id, deterministic
    )
    takeover = None if intervener is None else lambda i, proposed: intervener(envs[i], proposed)
    observations = {}
    metas = []
    for i, (env, context) in enumerate(zip(envs, contexts, strict=True)):
        observations[i] = env.reset(context)
        metas.append(controller.begin(i, context, slot_ids[i]))

    while observations:
        n_active = len(observations)
        stepping = []
        for i, (command, fault) in controller.tick(observations, takeover).items():
            if fault:
                controller.finish(i, FAULT_REASON, Label(success=False, source="sim", labeler=type(envs[i]).__name__))
                del observations[i]
                continue
            render = controller.intervening(i) or controller.frame_due(controller.step_of(i))
            envs[i].step_async(command, render=render)
            stepping.append(i)
        for i in stepping:  # envs in worker processes step concurrently between step_async and step_wait
            result = envs[i].step_wait()
            observations[i] = result.observation
            steps = controller.step_of(i)
            if result.done or steps >= spec.max_steps:
                label = None
                if result.success is not None:
                    label = Label(success=result.success, source="sim", labeler=type(envs[i]).__name__)
                controller.finish(i, result.reason if result.done else "max steps", label, result.observation)
                del observations[i]
        if on_step is not None:
            on_step(n_active)
    by_id = {e.meta.episode_id: e for e in buffer.episodes}
    return [by_id[m.episode_id] for m in metas]


def success_rate(episodes: Sequence[Episode]) -> float:
    """Share of labeled episodes that succeeded (NaN when none is labeled)."""
    rewards = [e.reward for e in episodes if e.reward is not None]
    return float(np.mean(rewards)) if rewards else float("nan")
