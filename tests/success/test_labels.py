"""Operator labels: conflicts refused, double taps absorbed, corrections and undos kept in the history."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zarr
from synthetic import synthetic_episode

from ript_robot.data.store import EpisodeStore
from ript_robot.success.labels import LabelConflict, LabelDesk, LabelError


class Clock:
    """A virtual wall clock that starts a minute after now (after the test's episode ended)."""

    def __init__(self) -> None:
        self.now = self.start = round(time.time()) + 60.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path: Path) -> tuple[EpisodeStore, str, Clock, LabelDesk]:
    store = EpisodeStore(tmp_path / "store", create=True)
    episode = synthetic_episode(success=None)
    store.write_episode(episode)
    clock = Clock()
    return store, episode.meta.episode_id, clock, LabelDesk(store, undo_window_s=10.0, clock=clock)


def test_label_undo_relabel_lands_in_the_store_with_who_and_when(setup, tmp_path: Path) -> None:
    store, episode_id, clock, desk = setup
    state = desk.label(episode_id, True, "tablet-1", revision=0, suggestion=0.8)
    assert state.label.success and state.label.labeler == "tablet-1" and state.revision == 1
    clock.now += 3
    state = desk.undo(episode_id, "tablet-1", revision=1)
    assert state.label is None and state.revision == 2
    assert store.refresh().records()[0].reward is None  # the trainer sees it unlabeled again
    clock.now += 1
    desk.label(episode_id, False, "tablet-1", revision=2)
    fresh = EpisodeStore(tmp_path / "store").refresh()  # another process reads the same history
    record = fresh.records()[0]
    assert record.reward == 0.0
    assert [(label.success, label.retracted) for label in record.labels] == [
        (True, False),
        (True, True),
        (False, False),
    ]
    assert record.labels[0].suggestion == 0.8 and record.labels[0].time == clock.start
    assert (
        zarr.open_group(str(tmp_path / "store" / "episodes" / episode_id)).attrs["ript_episode"]["label"]["success"]
        is False
    )


def test_a_stale_label_is_refused_and_a_double_tap_is_written_once(setup) -> None:
    store, episode_id, _clock, desk = setup
    desk.label(episode_id, True, "tablet-1", revision=0)
    with pytest.raises(LabelConflict, match=f"episode {episode_id} was already labeled at revision 0"):
        desk.label(episode_id, True, "tablet-1", revision=0)  # the double tap
    assert len(store.refresh().records()[0].labels) == 1
    with pytest.raises(LabelConflict, match="success by tablet-1") as conflict:
        desk.label(episode_id, False, "tablet-2", revision=0)  # a second tablet saw it unlabeled
    assert conflict.value.current.revision == 1 and conflict.value.current.label.success
    with pytest.raises(LabelConflict, match=f"episode {episode_id} has revision 1, not 5"):
        desk.label(episode_id, False, "tablet-2", revision=5)
    corrected = desk.label(episode_id, False, "tablet-2", revision=1)  # after looking again: a correction
    assert corrected.corrected and not corrected.label.success and len(corrected.history) == 2
    assert corrected.label.undo_window_s == 10.0  # the trainer waits that long before it uses the label


def test_a_correction_of_an_undone_label_is_refused_and_writes_nothing(setup) -> None:
    store, episode_id, clock, desk = setup
    desk.label(episode_id, True, "tablet-1", revision=0)
    clock.now += 2
    desk.undo(episode_id, "tablet-1", revision=1)
    with pytest.raises(LabelConflict, match=f"episode {episode_id} changed .* unlabeled \\(undone\\)"):
        desk.label(episode_id, False, "tablet-2", revision=1)  # corrects the label it saw, which is gone
    with pytest.raises(LabelConflict, match="nothing undone"):
        desk.undo(episode_id, "tablet-1", revision=2)  # undoing the undo
    assert len(store.refresh().records()[0].labels) == 2


def test_a_discarded_episode_leaves_training_and_the_discard_can_be_undone(setup) -> None:
    store, episode_id, clock, desk = setup
    state = desk.discard(episode_id, "tablet-1", revision=0)
    record = store.refresh().records()[0]
    assert state.discarded and state.label is None and record.discarded and record.reward is None
    assert record.settled_label(clock.now + 60) is None  # never a reward, even once settled
    clock.now += 3
    state = desk.undo(episode_id, "tablet-1", revision=1)
    assert not state.discarded and state.label is None
    state = desk.label(episode_id, False, "tablet-1", revision=2)
    record = store.refresh().records()[0]
    assert record.settled_label(clock.now + 5) is None  # inside the undo window: not yet for the trainer
    assert record.settled_label(clock.now + 11).success is False


def test_undo_only_by_the_labeler_within_the_window(setup) -> None:
    store, episode_id, clock, desk = setup
    desk.label(episode_id, True, "tablet-1", revision=0)
    with pytest.raises(LabelError, match="only tablet-1 can undo"):
        desk.undo(episode_id, "tablet-2", revision=1)
    clock.now += 11
    with pytest.raises(LabelError, match=r"undo window \(10 s\) has passed"):
        desk.undo(episode_id, "tablet-1", revision=1)
    with pytest.raises(LabelConflict, match="nothing undone"):
        desk.undo(episode_id, "tablet-1", revision=0)
    assert store.refresh().records()[0].reward == 1.0


def test_labels_keep_their_order_when_the_clock_steps_back(setup) -> None:
    store, episode_id, clock, desk = setup
    desk.label(episode_id, True, "tablet-1", revision=0)
    clock.now -= 60  # NTP stepped the wall clock back
    desk.label(episode_id, False, "tablet-1", revision=1)
    assert store.refresh().records()[0].reward == 0.0
