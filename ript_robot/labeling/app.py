"""The operator's tablet app: label episodes, watch the arm, start the next episode, stop it.

One page (`static/`) polls `GET /api/state` and draws: the live view of the episode in
progress (newest camera frame, step, policy version), the episode that just ended with big
Success and Failure buttons, a Discard button (a fault, a disturbed scene: not to be learned
from) and the detector's suggestion, an undo button for a few seconds after a label or discard,
the queue of unlabeled episodes with key frames and the label backlog the trainer waits on,
labels corrected after an update used them (and which version), per-context
progress of the K rollouts, the next context to set up with the first frame of an earlier
episode of it as the reference image, and start / software-stop buttons that call the
policy node through a `RobotLink`. Labels go through `LabelDesk` (conflicts refused,
corrections and undos kept). `LabelApp` holds that state and logic; `ript_robot.labeling.routes`
serves it over HTTP, where every request but the page and pairing needs a paired session and
every write its CSRF token (`ript_robot.labeling.auth`).
"""

from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict, defaultdict
from typing import Any

import numpy as np
from PIL import Image

from ript_robot.config import LabelAppConfig
from ript_robot.data.checkpoints import latest_version
from ript_robot.data.index import EpisodeRecord, label_to_dict
from ript_robot.data.schedule import Schedule
from ript_robot.data.store import EpisodeStore
from ript_robot.data.usage import TrainingUse
from ript_robot.labeling.auth import Pairing, Session
from ript_robot.labeling.robot import RobotLink
from ript_robot.success.labels import LabelDesk, LabelState
from ript_robot.types import CheckpointError

KEY_FRAMES = 4
CORRECTIONS_SHOWN = 20  # labels corrected after training, newest first


def jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    """RGB uint8 (H, W, 3) to JPEG bytes."""
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _word(success: bool) -> str:
    return "success" if success else "failure"


def label_json(state: LabelState) -> dict[str, Any]:
    return {
        "label": None if state.label is None else label_to_dict(state.label),
        "revision": state.revision,
        "corrected": state.corrected,
        "discarded": state.discarded,
        "history": [label_to_dict(label) for label in state.history],
    }


class LabelApp:
    """The app's state and logic; `ript_robot.labeling.routes.fastapi_app` serves it."""

    def __init__(
        self,
        store: EpisodeStore,
        config: LabelAppConfig,
        robot: RobotLink | None = None,
        detector: Any | None = None,
        pairing: Pairing | None = None,
    ):
        """detector: a `ript_robot.success.detector.DetectorService` (suggestions, auto labels), or None."""
        self.store = store
        self.config = config
        self.robot = robot
        self.detector = detector
        self.pairing = pairing or Pairing.for_app(config)
        self.desk = LabelDesk(store, config.undo_window_s)
        self.use = TrainingUse(store.backend)  # which update used which label: corrections after training
        self.schedule = Schedule(store.backend)
        self._frames: OrderedDict[tuple[str, str], bytes] = OrderedDict()  # (episode or context, index) -> JPEG
        self._lock = threading.Lock()

    # ---- what the page shows -------------------------------------------------------------
    def state(self, session: Session) -> dict[str, Any]:
        self.store.refresh()
        status = self.robot.status() if self.robot is not None else None
        rollouts = self.store.records()
        if self.detector is not None:
            self.detector.auto_label(rollouts)
        version = status.get("policy_version") if status else None
        if version is None:
            version = _published_version(self.store)
        now = time.time()
        window = self.config.undo_window_s
        self.use.refresh()
        unlabeled = [r for r in rollouts if r.meta.label is None and not r.discarded]
        recent = [  # labeled or discarded moments ago: the page keeps them on screen for undo
            r for r in rollouts if r.newest is not None and not r.newest.retracted and now - r.newest.time <= window
        ]
        waiting = [r for r in unlabeled if r.meta.slot_id and r.meta.sampling == "sampled"]  # the trainer waits on
        oldest = min((r.meta.end_time or r.committed_at for r in waiting), default=None)
        corrections = [(r, self.use.correction(r)) for r in rollouts if r.episode_id in self.use.uses]
        return {
            "you": session.name,
            "robot": status,
            "live": self.robot is not None,
            "queue": [self._item(r) for r in unlabeled[-self.config.queue_length :]][::-1],
            "recent": [self._item(r) for r in recent],
            "label_backlog": {"count": len(waiting), "oldest_s": None if oldest is None else now - oldest},
            "corrections": [{"episode_id": r.episode_id, "text": text} for r, text in corrections[::-1] if text][
                :CORRECTIONS_SHOWN
            ],
            "progress": self._progress(rollouts, version),
            "next_context": self._next_context(status),
            "detector": None if self.detector is None else self.detector.summary(rollouts),
            "undo_window_s": window,
            "poll_ms": self.config.poll_ms,
            "server_time": now,
        }

    def _item(self, record: EpisodeRecord) -> dict[str, Any]:
        m = record.meta
        state = LabelState.of(record)
        suggestion = None if self.detector is None else self.detector.suggestion(m.episode_id)
        return {
            "episode_id": m.episode_id,
            "context_id": m.context.context_id,
            "instruction": m.context.instruction,
            "policy_version": m.policy_version,
            "robot_id": m.robot_id,
            "steps": m.num_steps,
            "interventions": m.interventions,  # times a person took over: label the outcome, rescued or not
            "end_reason": m.end_reason,
            "fault": m.end_reason.startswith("fault"),
            "training": self._training(record),
            "ended_at": m.end_time,
            "suggestion": suggestion,
            **label_json(state),
        }

    def _training(self, record: EpisodeRecord) -> str:
        """How training used the episode ('' if not yet), or how its label changed since."""
        use = self.use.uses.get(record.episode_id)
        if use is None:
            return ""
        correction = self.use.correction(record)
        if correction:
            return correction
        if not use.trained:
            return f"judged uniform by v{use.version}"
        return f"trained on by v{use.version}" + ("" if use.success is None else f" as {_word(use.success)}")

    def _progress(self, rollouts: list[EpisodeRecord], version: int | None) -> list[dict[str, Any]]:
        """Per context of the current policy version: K scheduled (or configured), done, labeled."""
        if version is None:
            return []
        wanted: dict[str, int] = defaultdict(int)
        instructions: dict[str, str] = {}
        for slot in self.schedule.slots(version):
            wanted[slot.context.context_id] += 1
            instructions[slot.context.context_id] = slot.context.instruction
        done: dict[str, int] = defaultdict(int)
        labeled: dict[str, int] = defaultdict(int)
        for r in rollouts:
            if r.meta.policy_version != version:
                continue
            cid = r.meta.context.context_id
            done[cid] += 1
            labeled[cid] += r.meta.label is not None
            instructions.setdefault(cid, r.meta.context.instruction)
        k = self.config.rollouts_per_context
        return [
            {
                "context_id": cid,
                "instruction": instructions[cid],
                "k": wanted.get(cid, k),
                "done": done[cid],
                "labeled": labeled[cid],
                "policy_version": version,
            }
            for cid in sorted(set(wanted) | set(done))
        ]

    def _next_context(self, status: dict[str, Any] | None) -> dict[str, Any] | None:
        context = status.get("context") if status else None
        if not context or status.get("state") != "ready":
            return None
        earlier = self._reference_episode(context["context_id"])
        return {**context, "reference": earlier is not None}

    def _reference_episode(self, context_id: str) -> str | None:
        """The newest committed episode of a context (its first frame shows how the scene was set up)."""
        matches = [r for r in self.store.records(kind=None) if r.meta.context.context_id == context_id]
        return matches[-1].episode_id if matches else None

    def known(self, episode_id: str) -> bool:
        """Whether `episode_id` is committed in the store (its index read again only when not found)."""
        return episode_id in self.store.index.episodes or episode_id in self.store.refresh().index.episodes

    # ---- images --------------------------------------------------------------------------
    def key_frame(self, episode_id: str, index: int) -> bytes | None:
        key = (episode_id, str(index))
        with self._lock:
            if key in self._frames:
                return self._frames[key]
        frames = self.store.key_frames(episode_id, KEY_FRAMES)
        if not 0 <= index < len(frames):
            return None
        with self._lock:
            for i, frame in enumerate(frames):
                self._frames[(episode_id, str(i))] = jpeg(frame)
            while len(self._frames) > 64 * KEY_FRAMES:
                self._frames.popitem(last=False)
            return self._frames[key]

    def reference_frame(self, context_id: str) -> bytes | None:
        episode_id = self._reference_episode(context_id)
        return None if episode_id is None else self.key_frame(episode_id, 0)

    def live_frame(self) -> bytes | None:
        frame = self.robot.frame() if self.robot is not None else None
        return None if frame is None else jpeg(frame, quality=70)


def _published_version(store: EpisodeStore) -> int | None:
    """The latest published version, None when there is none or its pointer is damaged (the trainer's
    problem, reported there: the operator's page keeps working)."""
    try:
        return latest_version(store.backend)
    except CheckpointError:
        return None
