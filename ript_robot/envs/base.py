"""The `RobotEnv` contract: what the shared runtime needs from a simulator or a real arm.

A real arm (through the ROS 2 policy node), LIBERO (through `sim_bridge`) and the built-in
task all implement it, so one control loop drives them all. An env resets to a `Context`,
returns `Observation`s, applies one safety-filtered command per tick, and reports success
only when it knows it: a simulator does, a real arm returns `None` and leaves the label to
the operator or the success detector.

Rendering is the expensive part of a simulator, and a chunked policy needs a picture only
when it re-plans: `step(action, render=False)` may return an observation without images,
which the runtime asks for whenever neither the policy nor the episode log needs the next
frame. `step_async` / `step_wait` let envs that live in worker processes step at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from ript_robot.types import Context, Observation


@dataclass(frozen=True)
class EnvSpec:
    """What an env looks like to a policy.

    cameras: camera name -> (height, width) of its uint8 RGB images.
    state_dim: length of the proprioceptive state vector.
    action_dim: length of one command; each entry lies in [action_low, action_high].
    control_hz: control rate of the arm or simulator, in Hz.
    max_steps: step limit of one episode.
    """

    cameras: dict[str, tuple[int, int]]
    state_dim: int
    action_dim: int
    control_hz: float
    max_steps: int
    action_low: float = -1.0
    action_high: float = 1.0
    action_names: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class StepResult:
    """Outcome of one command: the next observation, whether the episode is over and why.

    success: True/False when the env knows (a simulator), None when it cannot (a real arm).
    """

    observation: Observation
    done: bool
    success: bool | None
    reason: str = ""


class RobotEnv(ABC):
    """An arm in a scene, real or simulated."""

    spec: EnvSpec

    @abstractmethod
    def reset(self, context: Context) -> Observation:
        """Put the scene in the context's initial layout and return the first observation."""

    @abstractmethod
    def step(self, action: np.ndarray, render: bool = True) -> StepResult:
        """Apply one command of shape (action_dim,), already safety-filtered.

        render: False when nobody will look at the next observation's images; the env may then
        leave `observation.images` empty (an env that renders cheaply may ignore it).
        """

    def step_async(self, action: np.ndarray, render: bool = True) -> None:
        """Start a step whose result `step_wait` returns; envs in worker processes send it off here.

        The default steps at once, so in-process envs need not implement it.
        """
        self._async_result = self.step(action, render)

    def step_wait(self) -> StepResult:
        """The result of the step `step_async` started."""
        result = getattr(self, "_async_result", None)
        if result is None:
            raise RuntimeError(f"{type(self).__name__}.step_wait() without step_async()")
        self._async_result = None
        return result

    def close(self) -> None:  # noqa: B027 - optional hook, most envs hold nothing to release
        """Release hardware or simulator resources."""
