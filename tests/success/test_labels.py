"""Operator labels: conflicts refused, double taps absorbed, corrections and undos kept in the history."""

from __future__ import annotations

from pathlib import Path

import pytest
import zarr
from synthetic import synthetic_episode

from ript_robot.data.store import EpisodeStore
from ript_robot.success.labels import LabelConflict, LabelDesk, LabelError


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

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
    assert record.labels[0].suggestion == 0.8 and record.labels[0].time == 1000.0
    assert (
        zarr.open_group(str(tmp_path / "store" / "episodes" / episode_id)).attrs["ript_episode"]["label"]["success"]
        is False
    )


def test_a_stale_label_is_refused_and_a_double_tap_is_written_once(setup) -> None:
    store, episode_id, _clock, desk = setup
    desk.label(episode_id, True, "tablet-1", revision=0)
    again = desk.label(episode_id, True, "tablet-1", revision=0)  # the double tap
    assert again.revision == 1 and len(store.refresh().records()[0].labels) == 1
    with pytest.raises(LabelConflict, match="now success by tablet-1") as conflict:
        desk.label(episode_id, False, "tablet-2", revision=0)  # a second tablet saw it unlabeled
    assert conflict.value.current.revision == 1 and conflict.value.current.label.success
    corrected = desk.label(episode_id, False, "tablet-2", revision=1)  # after looking again: a correction
    assert corrected.corrected and not corrected.label.success and len(corrected.history) == 2


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
