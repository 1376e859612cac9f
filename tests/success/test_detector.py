"""The vision success detector: trained on the simulator's labels, calibrated, judging fresh episodes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from ript_robot.config import DetectorConfig
from ript_robot.data.store import EpisodeStore
from ript_robot.success.detector import DetectorService, SuccessDetector, calibrate, train_detector
from ript_robot.success.labels import LabelDesk
from ript_robot.types import Label
from sim_bridge.pick_outcomes import outcome_episodes


def fill(store: EpisodeStore, episodes: list) -> EpisodeStore:
    writer = store.writer()
    for episode in episodes:
        store.write_episode(episode, writer)
    writer.close()
    return store.refresh()


@pytest.mark.learning
def test_trained_on_sim_labels_it_labels_fresh_episodes_it_is_sure_of_and_leaves_the_rest(
    trained_detector, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    detector, report = trained_detector
    fresh = outcome_episodes(600, detector.config.image_size, seed=1011)  # layouts it never saw
    truth = {e.meta.episode_id: e.meta.label.success for e in fresh}
    timeouts = {e.meta.episode_id for e in fresh if e.meta.end_reason == "timeout"}
    for episode in fresh:
        episode.meta.label = None  # committed unlabeled, as an arm's episodes are
    store = fill(EpisodeStore(tmp_path / "fresh", create=True), fresh)
    service = DetectorService(store, detector, "auto")
    guesses = {i: service.suggestion(i)["success"] for i in truth}
    assert not any(guesses[i] for i in timeouts)  # no grasp at the end: never a success
    labeled = service.auto_label(store.records())
    store.refresh()
    auto = [r for r in store.records() if r.meta.label is not None]
    record_property("auto_coverage", len(auto) / len(truth))
    record_property("auto_right", float(np.mean([r.meta.label.success == truth[r.episode_id] for r in auto] or [0])))
    # five seeds, 200 fresh episodes each: it labeled 14-28% of them, 95-100% right
    assert len(auto) == labeled >= 0.1 * len(truth), report  # it labels a share on its own ...
    assert all(r.meta.label.source == "detector" for r in auto)
    assert np.mean([r.meta.label.success == truth[r.episode_id] for r in auto]) >= 0.93  # ... and gets it right
    assert len(auto) < len(truth)  # the rest waits for the operator


def test_auto_mode_never_overrules_an_operator_and_agreement_is_counted(trained_detector, tmp_path: Path) -> None:
    detector, _ = trained_detector
    episodes = outcome_episodes(12, detector.config.image_size, seed=1012)
    truth = {e.meta.episode_id: e.meta.label.success for e in episodes}
    for episode in episodes:
        episode.meta.label = None
    store = fill(EpisodeStore(tmp_path / "s", create=True), episodes)
    service = DetectorService(store, detector, "auto")
    desk = LabelDesk(store)
    first, second, *_ = truth
    for episode_id in (first, second):  # the operator labels with the detector's suggestion on screen
        shown = service.suggestion(episode_id)["probability"]
        desk.label(episode_id, truth[episode_id], "tablet-1", revision=0, suggestion=shown)
    desk.undo(second, "tablet-1", revision=1)  # ... and takes one back: it waits for a person again
    service.auto_label(store.refresh().records())
    store.refresh()
    assert store.index.episodes[second].meta.label is None
    assert store.index.episodes[first].meta.label.source == "operator"
    summary = service.summary(store.records())
    agreed = (service.suggestion(first)["success"]) == truth[first]
    assert summary["compared"] == 1 and summary["agree"] == int(agreed)
    assert summary["auto_labeled"] == sum(
        r.meta.label is not None and r.meta.label.source == "detector" for r in store.records()
    )


def test_calibration_puts_the_auto_zone_where_held_out_error_is_within_the_bound() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.4).astype(np.float32)
    logits = torch.from_numpy(np.where(y == 1, 2.0, -2.0) + rng.normal(0, 1.5, 400)).float()
    detector = SuccessDetector(DetectorConfig(auto_max_error=0.02), "top")
    report = calibrate(detector, logits, y)
    p = torch.sigmoid(logits / detector.temperature).numpy()
    high, low = p >= report["auto_high"], p <= report["auto_low"]
    assert high.sum() > 0 and low.sum() > 0 and (high | low).mean() < 1.0  # confident on some, not all
    assert (y[high] == 0).mean() <= 0.02 and (y[low] == 1).mean() <= 0.02
    assert report["heldout_accuracy"] >= 0.85


def test_save_load_round_trip_and_clear_errors(trained_detector, tmp_path: Path) -> None:
    detector, report = trained_detector
    folder = detector.save(tmp_path / "det", report)
    loaded = SuccessDetector.load(folder)
    frames = [np.full((32, 32, 3), 100, np.uint8)]
    assert np.allclose(
        loaded.probability(frames, ["pick up the red block"]), detector.probability(frames, ["pick up the red block"])
    )
    assert float(loaded.threshold) == float(detector.threshold)
    with pytest.raises(FileNotFoundError, match="not a trained detector"):
        SuccessDetector.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.probability([np.zeros((32, 32), np.float32)], ["x"])


def test_too_few_labeled_episodes_is_a_clear_error_and_its_own_labels_never_count(tmp_path: Path) -> None:
    episodes = outcome_episodes(15, 32, seed=3)
    for episode in episodes[5:]:  # ten episodes only the detector itself labeled
        episode.meta.label = Label(bool(episode.meta.label.success), "detector", 0.9)
    store = fill(EpisodeStore(tmp_path / "s", create=True), episodes)
    with pytest.raises(ValueError, match="at least 8 episodes"):
        train_detector(store, DetectorConfig(image_size=32, steps=5), progress=False)
