"""Operator labels with integrity: conflicts are refused, corrections and undos stay visible.

An operator's tap becomes a `Label` row in the episode store (append-only, with who and
when). Two tablets, or one double tap, must never leave conflicting labels silently, so
every write names the label *revision* it was made against: the number of label rows the
episode had when the operator saw it. A write against any other revision (a double tap, a
second tablet, a correction of a label undone since) is refused with `LabelConflict`, which
names the episode and carries what is there now; nothing is written. A label over an
existing one, made against the current revision, is a correction: both stay in the
history. An undo, within `undo_window_s` of the operator's own label, appends a retraction
and leaves the episode unlabeled again. A discard keeps an episode out of training. Every
operator row carries the undo window, so the trainer uses it only once the window passed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    label: Label | None  # None: unlabeled (never labeled, the last label was undone, or discarded)
    revision: int  # label rows so far; a write must name it
    history: list[Label]  # every label row, oldest first, undos included

    @classmethod
    def of(cls, record: EpisodeRecord) -> LabelState:
        """The label state the store's index holds for one episode."""
        return cls(record.episode_id, record.meta.label, len(record.labels), list(record.labels))

    @property
    def discarded(self) -> bool:
        """True when the newest row keeps the episode out of training."""
        return bool(self.history) and self.history[-1].discarded

    @property
    def corrected(self) -> bool:
        """True when the current label replaced an earlier, different one."""
        given = [label for label in self.history if not (label.retracted or label.discarded)]
        return self.label is not None and len(given) > 1 and given[-1].success != given[-2].success


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
        Raises LabelConflict when the labels changed since `revision`: a double tap, a second tablet
        that saw an older state, a correction of a label undone since. Nothing is written then.
        """
        return self._write(episode_id, labeler, revision, success=success, suggestion=suggestion)

    def discard(self, episode_id: str, labeler: str, revision: int) -> LabelState:
        """Keep the episode out of training (a fault, a disturbed scene): it stays in the store, the
        trainer schedules its slot again. Undone like a label, within the window."""
        return self._write(episode_id, labeler, revision, success=False, discarded=True)

    def _write(self, episode_id: str, labeler: str, revision: int, **fields: Any) -> LabelState:
        with self._lock:
            current = self.state(episode_id)
            if revision != current.revision:
                raise LabelConflict(_changed(episode_id, revision, current), current)
            label = Label(
                source="operator", labeler=labeler, time=self._now(current), undo_window_s=self.undo_window_s, **fields
            )
            self.store.add_label(episode_id, label)  # refreshes the index
            return self.state(episode_id, refresh=False)

    def undo(self, episode_id: str, labeler: str, revision: int) -> LabelState:
        """Withdraw `labeler`'s own label or discard within the undo window; the episode is unlabeled again."""
        with self._lock:
            current = self.state(episode_id)
            newest = current.history[-1] if current.history else None
            if revision != current.revision or newest is None or newest.retracted:
                raise LabelConflict(f"episode {episode_id} changed since you labeled it: nothing undone", current)
            if newest.labeler != labeler or newest.source != "operator":
                raise LabelError(
                    f"episode {episode_id}: only {newest.labeler or newest.source} can undo their label; "
                    "correct it instead"
                )
            age = self.clock() - newest.time
            if age > self.undo_window_s:
                raise LabelError(
                    f"episode {episode_id}: the undo window ({self.undo_window_s:.0f} s) has passed "
                    f"({age:.0f} s ago); label the episode again to correct it"
                )
            retraction = Label(newest.success, "operator", 1.0, labeler, self._now(current), retracted=True)
            self.store.add_label(episode_id, retraction)
            return self.state(episode_id, refresh=False)

    def _now(self, current: LabelState) -> float:
        """The clock, but never before the newest row: the index orders an episode's labels by time."""
        newest = max((label.time for label in current.history), default=0.0)
        return max(self.clock(), newest + 1e-6)


def _changed(episode_id: str, revision: int, current: LabelState) -> str:
    """Why a write against `revision` is refused, naming the episode and what it holds now."""
    if revision > current.revision:
        return f"episode {episode_id} has revision {current.revision}, not {revision}: reload it and label again"
    newest = current.history[-1] if current.history else None
    if newest is not None and not newest.retracted and revision == current.revision - 1:
        there = "discarded" if newest.discarded else _describe(newest)
        return f"episode {episode_id} was already labeled at revision {revision} ({there}): nothing written"
    there = "unlabeled (undone)" if newest is not None and newest.retracted else "discarded"
    if current.label is not None:
        there = _describe(current.label)
    return f"episode {episode_id} changed while you looked: it is now {there}; look again and correct it if it is wrong"
