"""Batched simulated rollouts through the shared runtime.

A `SimRollouts` owns a pool of simulator instances and runs any list of contexts through
`run_episodes` in batches of at most `max_envs`, so every policy call is batched. The
built-in task runs in-process; LIBERO's worker processes plug in behind the same call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from tqdm.auto import tqdm

from ript_robot.config import EvalConfig, QuickstartConfig, RuntimeConfig
from ript_robot.envs.base import RobotEnv
from ript_robot.envs.pick import PickEnv, ScriptedOperator
from ript_robot.policies.base import Policy
from ript_robot.runtime.evaluate import EvalResult, evaluate
from ript_robot.runtime.loop import EpisodeSink, Intervener, run_episodes
from ript_robot.types import Context, Episode


class SimRollouts:
    """Run contexts on pooled simulators, `max_envs` at a time, with an optional progress bar."""

    def __init__(
        self, make_env: Callable[[], RobotEnv], runtime: RuntimeConfig, max_envs: int = 256, robot_id: str = "sim"
    ):
        """make_env: builds one simulator; max_envs: simulators stepped in lock step (>= 1);
        robot_id: recorded with each episode."""
        if max_envs < 1:
            raise ValueError(f"max_envs must be >= 1, got {max_envs}")
        self.make_env = make_env
        self.runtime = runtime
        self.max_envs = max_envs
        self.robot_id = robot_id
        self.envs: list[RobotEnv] = []

    def __call__(
        self,
        policy: Policy,
        contexts: Sequence[Context],
        deterministic: bool = False,
        desc: str | None = None,
        sink: EpisodeSink | None = None,
        slot_ids: Sequence[str] | None = None,
        intervener: Intervener | None = None,
    ) -> list[Episode]:
        """One episode per context, in order; `sink` (e.g. the store's writer) also gets every step;
        `slot_ids`: the schedule slot each context fills (an actor's claimed work); `intervener`: who may
        take over (training rollouts only: evaluation never passes one)."""
        episodes: list[Episode] = []
        with tqdm(total=len(contexts), desc=desc, disable=desc is None, leave=False, unit="ep") as bar:
            for begin in range(0, len(contexts), self.max_envs):
                batch = contexts[begin : begin + self.max_envs]
                while len(self.envs) < len(batch):
                    self.envs.append(self.make_env())
                slots = None if slot_ids is None else slot_ids[begin : begin + self.max_envs]
                episodes += run_episodes(
                    self.envs[: len(batch)], batch, policy, self.runtime, sink, deterministic, self.robot_id,
                    slot_ids=slots, intervener=intervener,
                )  # fmt: skip
                bar.update(len(batch))
        return episodes

    def evaluate(
        self, policy: Policy, contexts: Sequence[Context], config: EvalConfig, desc: str | None = None
    ) -> EvalResult:
        """Success of `policy` on `contexts`, as `config` says (rollouts per context, sampled or not)."""
        return evaluate(lambda c, deterministic: self(policy, c, deterministic, desc=desc), contexts, config)

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs.clear()


def scripted_operator(cfg: QuickstartConfig) -> Intervener | None:
    """The built-in task's scripted operator when `task.scripted_operator` asks for one (training rollouts)."""
    return ScriptedOperator() if cfg.task.scripted_operator else None


def builtin_rollouts(cfg: QuickstartConfig, max_envs: int = 256, robot_id: str = "sim") -> SimRollouts:
    """Batched rollouts on the built-in task as configured."""
    return SimRollouts(partial(PickEnv, cfg.task.image_size, cfg.task.max_steps), cfg.runtime, max_envs, robot_id)
