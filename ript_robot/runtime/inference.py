"""Inference beside the control loop: the policy plans the next chunk while the current one plays.

A real VLA takes 50-300 ms per chunk. Run inside the control tick, that is 2-9 periods at
30 Hz with no command at all: the watchdog, the software stop and a servo's command timeout
all starve. `InferenceWorker` runs `policy.act` on a thread of its own; the control loop hands
it the observation to plan from (`submit`, never blocks) and picks the chunk up on a later
tick (`poll`). While it works, the loop keeps executing the current chunk, and holds the arm
once that chunk is used up (it never extrapolates). As in LeRobot's asynchronous inference,
how far ahead to plan is the caller's threshold (`EpisodeController.needs_plan(lead)`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ript_robot.policies.base import Policy
from ript_robot.types import ActionChunk, Observation


@dataclass
class Planned:
    """The outcome of one request: the chunk (or the error the policy raised), and what it came from."""

    observation: Observation
    planned_step: int
    chunk: ActionChunk | None
    error: Exception | None
    seconds: float  # time inside policy.act


class InferenceWorker:
    """One background thread that runs `policy.act` for one request at a time.

    The policy is only ever called on this thread once the worker exists: swap it with
    `set_policy` while the worker is idle (between episodes). `delay_s` adds a pause to every
    call, to try a node against a slow policy without one.
    """

    def __init__(self, policy: Policy, deterministic: bool, delay_s: float = 0.0, name: str = "inference"):
        """deterministic: mean actions (evaluation) instead of samples; delay_s: extra seconds per call (>= 0)."""
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0 seconds, got {delay_s}")
        self.policy = policy
        self.deterministic = deterministic
        self.delay_s = delay_s
        self._lock = threading.Condition()
        self._request: tuple[Observation, int] | None = None
        self._result: Planned | None = None
        self._busy = False
        self._closed = False
        self._generation = 0  # bumped by `cancel`: a result planned before it is dropped
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A request is queued or being planned, or its result has not been polled yet."""
        with self._lock:
            return self._busy or self._request is not None or self._result is not None

    def submit(self, observation: Observation, planned_step: int) -> None:
        """Plan a chunk from `observation` (recorded at step `planned_step`); RuntimeError when busy."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the inference worker is closed")
            if self._busy or self._request is not None or self._result is not None:
                raise RuntimeError("the inference worker is still planning the previous chunk")
            self._request = (observation, planned_step)
            self._lock.notify_all()

    def poll(self) -> Planned | None:
        """The finished request, once (None while planning or when nothing was asked)."""
        with self._lock:
            result, self._result = self._result, None
            return result

    def cancel(self) -> None:
        """Forget the queued request and drop the result of the one in flight (an episode ended)."""
        with self._lock:
            self._generation += 1
            self._request = self._result = None

    def wait_idle(self, timeout: float) -> bool:
        """Block until no request is in flight (True) or `timeout` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._busy or self._request is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    def set_policy(self, policy: Policy) -> None:
        """Use `policy` for the next requests; RuntimeError while a request is in flight."""
        with self._lock:
            if self._busy or self._request is not None:
                raise RuntimeError("cannot swap the policy while it plans a chunk")
            self.policy = policy

    def call(self, fn: Callable[[Policy], object]) -> object:
        """Run `fn(policy)` on the caller's thread while the worker is idle (warm-up, checks)."""
        if not self.wait_idle(timeout=60.0):
            raise RuntimeError("the inference worker did not become idle within 60 s")
        return fn(self.policy)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._request = None
            self._lock.notify_all()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._request is None and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                (observation, step), self._request = self._request, None
                self._busy, generation, policy = True, self._generation, self.policy
            started = time.perf_counter()
            chunk, error = None, None
            try:
                if self.delay_s:
                    time.sleep(self.delay_s)
                chunk = policy.act([observation], deterministic=self.deterministic)[0]
            except Exception as exc:  # handed to the control loop, which ends the episode as a fault
                error = exc
            planned = Planned(observation, step, chunk, error, time.perf_counter() - started)
            with self._lock:
                self._busy = False
                if generation == self._generation:
                    self._result = planned
                self._lock.notify_all()
