"""Operator labels with integrity: conflicts are refused, corrections and undos stay visible.

An operator's tap becomes a `Label` row in the episode store (append-only, with who and
when). Two tablets, or one double tap, must never leave conflicting labels silently, so
every write names the label *revision* it was made against: the number of label rows the
episode had when the operator saw it. A write against an older revision is refused with
`LabelConflict` (carrying what is there now), except a repeat of the very label that is
there, which is taken as the double tap it is and not written twice. A label over an
existing one, made against the current revision, is a correction: both stay in the
history. An undo, within `undo_window_s` of the operator's own label, appends a retraction
and leaves the episode unlabeled again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ript_robot.data.backend import StoreError
from ript_robot.data.index import EpisodeRecord
from ript_robot.data.store import EpisodeStore
from ript_robot.types import Label


class LabelError(StoreError):
    """A label write that cannot be done as asked (the message says what to do instead)."""


class LabelConflict(LabelError):
    """The episode's labels changed since the client looked; `current` is what it has now."""

    def __init__(self, message: str, current: LabelState):
        super().__init__(message)
        self.current = current


@dataclass
class LabelState:
    """An episode's label as an operator sees it: the current label, the revision and the history."""

    episode_id: str
    label: Label | None  # None: unlabeled (never labeled, or the last label was undone)
    revision: int  # label rows so far; a write must name it
    history: list[Label]  # every label row, oldest first, undos included

    @classmethod
    def of(cls, record: EpisodeRecord) -> LabelState:
        """The label state the store's index holds for one episode."""
        return cls(record.episode_id, record.meta.label, len(record.labels), list(record.labels))

    @property
    def corrected(self) -> bool:
        """True when the current label replaced an earlier, different one."""
        given = [label for label in self.history if not label.retracted]
        return len(given) > 1 and given[-1].success != given[-2].success


def _describe(label: Label) -> str:
    outcome = "success" if label.success else "failure"
    return f"{outcome} by {label.labeler or label.source} at {time.strftime('%H:%M:%S', time.localtime(label.time))}"


class LabelDesk:
    """Label, correct and undo episodes of a store on behalf of operators (thread-safe in one process)."""

    def __init__(self, store: EpisodeStore, undo_window_s: float = 10.0, clock: Callable[[], float] = time.time):
        """undo_window_s: seconds (> 0) after a label during which its labeler may undo it; clock: wall time."""
        if undo_window_s <= 0:
            raise ValueError(f"undo_window_s must be > 0 seconds, got {undo_window_s}")
        self.store = store
        self.undo_window_s = undo_window_s
        self.clock = clock
        self._lock = threading.Lock()

    def state(self, episode_id: str, refresh: bool = True) -> LabelState:
        """The episode's current label, revision and history (raises StoreError for an unknown id)."""
        if refresh:
            self.store.refresh()
        record = self.store.index.episodes.get(episode_id)
        if record is None:
            raise StoreError(f"no committed episode {episode_id} in {self.store.uri}")
        return LabelState.of(record)

    def label(
        self, episode_id: str, success: bool, labeler: str, revision: int, suggestion: float | None = None
    ) -> LabelState:
        """Record the operator's label, made against `revision`; a correction when a label exists.

        suggestion: the detector's success probability the operator was shown (kept for agreement).
        Raises LabelConflict when the labels changed since `revision` (unless this repeats the current label).
        """
        with self._lock:
            current = self.state(episode_id)
            if revision != current.revision:
                if current.label is not None and current.label.success == success:
                    return current  # a double tap, or two operators agreeing: one row is enough
                there = "unlabeled (undone)" if current.label is None else _describe(current.label)
                raise LabelConflict(
                    f"episode {episode_id} changed while you looked: it is now {there}; "
                    "look again and correct it if it is wrong",
                    current,
                )
            label = Label(success, "operator", 1.0, labeler, self._now(current), suggestion=suggestion)
            self.store.add_label(episode_id, label)  # refreshes the index
            return self.state(episode_id, refresh=False)

    def undo(self, episode_id: str, labeler: str, revision: int) -> LabelState:
        """Withdraw `labeler`'s own label within the undo window; the episode is unlabeled again."""
        with self._lock:
            current = self.state(episode_id)
            label = current.label
            if revision != current.revision or label is None:
                raise LabelConflict(f"episode {episode_id} changed since you labeled it: nothing undone", current)
            if label.labeler != labeler or label.source != "operator":
                raise LabelError(f"only {label.labeler or label.source} can undo their label; correct it instead")
            age = self.clock() - label.time
            if age > self.undo_window_s:
                raise LabelError(
                    f"the undo window ({self.undo_window_s:.0f} s) has passed ({age:.0f} s ago); "
                    "label the episode again to correct it"
                )
            retraction = Label(label.success, "operator", 1.0, labeler, self._now(current), retracted=True)
            self.store.add_label(episode_id, retraction)
            return self.state(episode_id, refresh=False)

    def _now(self, current: LabelState) -> float:
        """The clock, but never before the newest row: the index orders an episode's labels by time."""
        newest = max((label.time for label in current.history), default=0.0)
        return max(self.clock(), newest + 1e-6)
