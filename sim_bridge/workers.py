"""Simulators in worker processes, behind the `RobotEnv` contract.

Physics and software rendering are single-threaded and hold the GIL, so N simulators in one
process step one after another. A `WorkerEnv` runs its simulator in a process of its own
(started with `spawn`, so no torch or EGL state is inherited) and implements `step_async` /
`step_wait`: `run_episodes` sends every worker its command, then collects the results, and
the N simulators step at once while the policy still sees one batch per tick.

A worker that dies (a segfault in the simulator, the OOM killer) raises `WorkerError`
naming the simulator and the context it was running; `close()` ends every worker, and
`SimRollouts.close()` closes them all, so nothing is left running.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from ript_robot.envs.base import RobotEnv, StepResult
from ript_robot.types import Context, Observation

START_TIMEOUT_S = 300.0  # building a LIBERO scene (meshes, textures, renderer) can take a while on a CPU


class WorkerError(RuntimeError):
    """A simulator worker failed or died."""


def _serve(make_env: Callable[[], RobotEnv], conn: Connection) -> None:
    """The worker's loop: build the env, then answer reset / step / close until told to stop."""
    # one simulator per core: Mesa's software renderer and OpenMP would each start a thread per core
    for variable in ("LP_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    try:
        env = make_env()
        conn.send(("ok", env.spec))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    try:
        while True:
            command, *args = conn.recv()
            if command == "close":
                break
            try:
                result = env.reset(*args) if command == "reset" else env.step(*args)
                conn.send(("ok", result))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    except (EOFError, KeyboardInterrupt):  # the parent went away or was interrupted
        pass
    finally:
        env.close()


class WorkerEnv(RobotEnv):
    """A `RobotEnv` built by `make_env` in a worker process; `name` says which simulator it is in errors."""

    def __init__(self, make_env: Callable[[], RobotEnv], name: str, start_timeout_s: float = START_TIMEOUT_S):
        """make_env: a picklable callable (a class, or functools.partial of one) that builds the env."""
        self.name = name
        self.context: Context | None = None
        self._waiting = False
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(make_env, child), daemon=True, name=f"sim-{name}")
        self._process.start()
        child.close()
        self.spec = self._receive("starting", timeout=start_timeout_s)

    def _where(self) -> str:
        return f"simulator worker {self.name}" + (f" on context {self.context.context_id}" if self.context else "")

    def _receive(self, doing: str, timeout: float | None = None) -> Any:
        where = self._where()
        try:
            if timeout is not None and not self._conn.poll(timeout):
                self.close()
                raise WorkerError(f"{where} did not answer within {timeout:.0f} s while {doing}")
            status, payload = self._conn.recv()
        except (EOFError, ConnectionResetError, BrokenPipeError) as exc:
            self._process.join(timeout=5)
            code = self._process.exitcode
            self.close()
            raise WorkerError(f"{where} died while {doing} (exit code {code})") from exc
        if status == "error":
            raise WorkerError(f"{where} failed while {doing}:\n{payload}")
        return payload

    def _send(self, *message: Any) -> None:
        try:
            self._conn.send(message)
        except (BrokenPipeError, ConnectionResetError, OSError) as exc:
            code = self._process.exitcode
            self.close()
            raise WorkerError(f"{self._where()} is gone (exit code {code})") from exc

    def reset(self, context: Context) -> Observation:
        self.context = context
        self._send("reset", context)
        return self._receive("resetting")

    def step(self, action: np.ndarray, render: bool = True) -> StepResult:
        self.step_async(action, render)
        return self.step_wait()

    def step_async(self, action: np.ndarray, render: bool = True) -> None:
        self._send("step", action, render)
        self._waiting = True

    def step_wait(self) -> StepResult:
        if not self._waiting:
            raise RuntimeError(f"WorkerEnv {self.name}: step_wait() without step_async()")
        self._waiting = False
        return self._receive("stepping")

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def close(self) -> None:
        """Ask the worker to stop, and make sure it does."""
        if self._process.is_alive():
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
                self._conn.send(("close",))
            self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)
        self._conn.close()
