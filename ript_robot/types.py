"""Core data types that flow through the RIPT loop.

Every room of the house speaks these types: an environment (simulated or a real arm)
produces `Observation`s, a policy turns them into `ActionChunk`s, the runtime logs a
`StepRecord` per control tick, and an episode ends with `EpisodeMeta` carrying its
`Label`. They depend on numpy and the standard library only, so the ROS nodes, the
episode store and the trainer can all share them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

LabelSource = Literal["sim", "operator", "detector"]
EpisodeKind = Literal["rollout", "demonstration"]
Sampling = Literal["sampled", "deterministic", "none"]  # how a policy drew the actions; "none": not a policy


@dataclass(frozen=True)
class Context:
    """One initial condition to roll out from: a task instruction in a seeded layout.

    `context_id` is stable across processes (it keys groups of K rollouts in the store);
    `seed` makes the layout reproducible in simulation; on a real arm the operator sets the
    scene up to match the context's reference image instead.
    """

    context_id: str
    instruction: str
    seed: int
    scene: str = "default"


@dataclass
class Observation:
    """What the policy sees at one control tick.

    images: camera name -> uint8 array of shape (H, W, 3), RGB.
    state: proprioception, float32 vector (units defined by the env's `EnvSpec`).
    stamps: capture time of each input (`camera/<name>`, `joint_states`, `ee_pose`) in seconds
    of the robot's clock, as its driver stamped it; empty in simulation.
    """

    images: dict[str, np.ndarray]
    state: np.ndarray
    instruction: str
    timestamp: float = field(default_factory=time.monotonic)
    stamps: dict[str, float] = field(default_factory=dict)


@dataclass
class ActionChunk:
    """A chunk of H actions planned at once, and its log-probability.

    actions: float32 (H, A), as sampled (before the safety filter), so the trainer can
    re-score exactly what was sampled. step_log_prob: float32 (H,), log density of each
    action of the chunk under the policy that produced it (in deterministic mode, the
    density at the mode); the PPO ratio is taken per action, like per token in an LLM. extras:
    whatever else a family needs to re-score the chunk exactly (a flow policy's denoising chain),
    float32 arrays of a fixed shape per family, stored with the chunk as `chunk_extras/<name>`.
    """

    actions: np.ndarray
    step_log_prob: np.ndarray
    policy_version: int = 0
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # what re-scoring needs besides the actions

    @property
    def log_prob(self) -> float:
        """Log density of the whole chunk: the sum over its actions."""
        return float(self.step_log_prob.sum())


@dataclass
class StepRecord:
    """One executed control tick, as the episode writer stores it."""

    step: int
    timestamp: float
    observation: Observation
    action: np.ndarray  # executed command after the safety filter, float32 (A,)
    chunk_index: int  # which ActionChunk of the episode this step belongs to
    safety_clipped: bool = False  # the safety filter changed the command
    safety_limited: bool = False  # ... to other than the sampled action clipped to the policy's bounds
    intervened: bool = False  # a person (teleoperation) commanded this step, not the policy


@dataclass
class Label:
    """Binary success label for a finished episode and who gave it.

    Labels are append-only: an undo is a label row with `retracted` set (it withdraws the
    label before it, whose `success` it repeats), and a correction is simply a newer label.
    A `discarded` row says the episode must not be learned from (a fault, a disturbed scene):
    it stays in the store, and the trainer re-schedules its slot. `suggestion` is the success
    probability the detector showed the operator, if any, so its agreement with operators can
    be counted from the labels alone. `undo_window_s` is how long its giver may still undo it:
    the trainer uses a label only once that window has passed (`settled`).
    """

    success: bool
    source: LabelSource
    confidence: float = 1.0
    labeler: str = ""
    time: float = field(default_factory=time.time)
    retracted: bool = False
    suggestion: float | None = None
    discarded: bool = False
    undo_window_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"Label confidence must be in [0, 1], got {self.confidence}")
        if self.suggestion is not None and not 0.0 <= self.suggestion <= 1.0:
            raise ValueError(f"Label suggestion must be a probability in [0, 1], got {self.suggestion}")
        if not self.undo_window_s >= 0.0:
            raise ValueError(f"Label undo_window_s must be >= 0 seconds, got {self.undo_window_s}")

    def settled(self, now: float) -> bool:
        """Whether its undo window has passed at wall time `now` (always, for sim and detector labels)."""
        return now >= self.time + self.undo_window_s

    @property
    def reward(self) -> float:
        return 1.0 if self.success else 0.0


@dataclass
class EpisodeMeta:
    """Attributes of one episode; the store writes them as the episode group's attributes."""

    episode_id: str
    context: Context
    policy_version: int
    robot_id: str
    start_time: float
    end_time: float | None = None
    num_steps: int = 0
    end_reason: str = ""
    label: Label | None = None
    kind: EpisodeKind = "rollout"  # demonstrations (teleoperation, scripted experts) feed SFT, not RIPT
    sampling: Sampling = "none"  # RIPT learns only from "sampled" rollouts
    slot_id: str | None = None  # the trainer's schedule slot this rollout fills; None for unscheduled runs
    interventions: int = 0  # times a person took over from the policy during the episode
    intervened_steps: int = 0  # steps a person commanded

    def reward_of(self, label: Label | None) -> float | None:
        """What RIPT credits the policy under `label`: None when unlabeled; 0.0 when a person took over (their
        rescue says the policy would not have succeeded alone, whatever the outcome); else the label's reward."""
        if label is None:
            return None
        return 0.0 if self.interventions else label.reward


@dataclass
class Episode:
    """A finished episode held in memory: metadata, executed steps and planned chunks."""

    meta: EpisodeMeta
    steps: list[StepRecord]
    chunks: list[ActionChunk]
    chunk_observations: list[Observation]  # the observation each chunk was planned from
    final: Observation | None = None  # the scene after the last step, when its cameras were rendered

    @property
    def reward(self) -> float | None:
        """The policy's reward: 1.0 / 0.0 once labeled (0.0 when a person took over), None while unlabeled."""
        return self.meta.reward_of(self.meta.label)


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not fit the policy that tries to load it."""
