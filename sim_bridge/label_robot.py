"""A simulated arm for the tablet app: try labeling without a robot (`ript label-app robot=sim`).

It behaves like the policy node as the tablet sees it: the built-in task runs one episode
at a time in real time (at the task's control rate) through the shared `EpisodeController`,
started from the tablet, with the policy the store published last (a fresh one when none is
published), on the contexts of the store's schedule or else the quickstart's training
layouts. Episodes are committed unlabeled, as on an arm: the operator labels them. Its
status has the policy node's `~/episode_status` fields.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import numpy as np

from ript_robot.config import QuickstartConfig
from ript_robot.data.schedule import Schedule
from ript_robot.data.store import EpisodeStore
from ript_robot.envs.pick import PickEnv, context_sets
from ript_robot.labeling.robot import RobotLink
from ript_robot.policies import make_policy
from ript_robot.policies.published import PolicyFollower
from ript_robot.runtime.loop import EpisodeController
from ript_robot.runtime.safety import SafetyFilter
from ript_robot.types import Context

SLOT = 0


class SimRobot(RobotLink):
    """The built-in task behind the `RobotLink` contract, in a thread of the app's process."""

    def __init__(
        self,
        store_uri: str,
        config: QuickstartConfig | None = None,
        robot_id: str = "sim-arm",
        deterministic: bool = False,
    ):
        """deterministic: run the policy's mean action instead of sampling (as the policy node's parameter)."""
        cfg = config or QuickstartConfig()
        self.cfg = cfg
        self.store = EpisodeStore(store_uri, create=True)
        self.env = PickEnv(cfg.task.image_size, cfg.task.max_steps)
        self.follower = PolicyFollower(self.store.backend)
        self.follower.update()
        policy = self.follower.policy or make_policy(cfg.policy, self.env.spec)
        self.writer = self.store.writer()
        safety = SafetyFilter(cfg.runtime.safety, self.env.spec.action_dim)
        self.controller = EpisodeController(policy, cfg.runtime, safety, [self.writer], robot_id, deterministic)
        self.schedule = Schedule(self.store.backend)
        self.robot_id = robot_id
        self._layouts = itertools.cycle(context_sets(cfg.task)[0])
        self._lock = threading.Lock()
        self._frame: np.ndarray | None = None
        self._seq = 0
        self._state, self._message = "idle", ""
        self._context: Context | None = None
        self._slot_id: str | None = None
        self._stopped = False
        self._last: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self._prepare()

    def _prepare(self) -> None:
        """Between episodes: a newer policy if published, then the next context, as the policy node does."""
        if self.follower.update():
            self.controller.set_policy(self.follower.policy)
        version = self.controller.policy.version
        slots = self.schedule.claim(version, self.robot_id, 1) if not self.schedule.finished() else []
        self._context = slots[0].context if slots else next(self._layouts)
        self._slot_id = slots[0].slot_id if slots else None
        self._frame = self.env.reset(self._context).images["top"]
        error = self.follower.last_error  # a damaged publication: the policy in use stays
        kept = f" (the newest publication does not load: {error})" if error else ""
        self._set("ready", f"set up context {self._context.context_id}, then call start{kept}")

    def _set(self, state: str, message: str) -> None:
        self._seq += 1
        self._state, self._message = state, message

    def status(self) -> dict[str, Any] | None:
        with self._lock:
            running = SLOT in self.controller.metas
            return {
                "seq": self._seq,
                "state": self._state,
                "message": self._message,
                "context": None if self._context is None else vars(self._context),
                "episode_id": self.controller.metas[SLOT].episode_id if running else None,
                "step": self.controller.step_of(SLOT) if running else 0,
                "policy_version": self.controller.policy.version,
                "software_stop": self._stopped,
                "last_episode": self._last,
            }

    def frame(self) -> np.ndarray | None:
        with self._lock:
            return None if self._frame is None else self._frame.copy()

    def start(self) -> tuple[bool, str]:
        with self._lock:
            if self._stopped:
                return False, "the software stop is engaged: release it first"
            if self._state != "ready" or self._context is None:
                return False, f"not ready to start: {self._state} ({self._message})"
            observation = self.env.reset(self._context)
            meta = self.controller.begin(SLOT, self._context, self._slot_id)
            self._set("running", f"episode {meta.episode_id} on {self._context.context_id}")
        self._thread = threading.Thread(target=self._run, args=(observation,), name="sim-arm", daemon=True)
        self._thread.start()
        return True, meta.episode_id

    def _run(self, observation: Any) -> None:
        period = 1.0 / self.env.spec.control_hz
        next_tick = time.monotonic()
        while True:
            with self._lock:
                if SLOT not in self.controller.metas:
                    return  # the software stop ended it
                command, fault = self.controller.tick({SLOT: observation})[SLOT]
                result = self.env.step(command)
                observation = result.observation
                self._frame = observation.images["top"]
                steps = self.controller.step_of(SLOT)
                if fault or result.done or steps >= self.env.spec.max_steps:
                    reason = "fault" if fault else (result.reason or "max steps")
                    self._end(reason)
                    return
            next_tick += period
            time.sleep(max(0.0, next_tick - time.monotonic()))

    def _end(self, reason: str) -> None:
        meta = self.controller.finish(SLOT, reason)  # unlabeled: the operator labels it on the tablet
        self._last = {
            "episode_id": meta.episode_id,
            "context_id": meta.context.context_id,
            "steps": meta.num_steps,
            "reason": reason,
            "success": None,
            "policy_version": meta.policy_version,
        }
        self._set("saving", f"episode ended: {reason}; committing it to the store")
        self.writer.flush()
        if self._stopped:
            self._set("stopped", "software stop engaged: release it to continue")
        else:
            self._prepare()

    def software_stop(self, engage: bool) -> tuple[bool, str]:
        with self._lock:
            if engage:
                self._stopped = True
                if SLOT in self.controller.metas:
                    self._end("software stop")
                self._set("stopped", "software stop engaged: release it to continue")
                return True, "software stop engaged: the arm holds"
            self._stopped = False
            if self._state == "stopped":
                self._prepare()
            return True, "software stop released"

    def close(self) -> None:
        self.software_stop(True)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.writer.close()
