"""The episode store: round trips, staged commits, labels, complete groups, integrity, backends."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr
from synthetic import synthetic_episode

from ript_robot.data import EpisodeStore, StoreError
from ript_robot.data.index import Index
from ript_robot.data.video import episode_frames
from ript_robot.types import Episode, Label


def assert_same_episode(stored: Episode, original: Episode) -> None:
    assert stored.meta.episode_id == original.meta.episode_id
    assert stored.meta.context == original.meta.context
    assert len(stored.steps) == len(original.steps)
    for a, b in zip(stored.steps, original.steps, strict=True):
        assert np.array_equal(a.observation.images["top"], b.observation.images["top"])
        assert np.array_equal(a.observation.state, b.observation.state)
        assert np.array_equal(a.action, b.action)
        assert a.chunk_index == b.chunk_index and a.timestamp == b.timestamp
        assert (a.safety_clipped, a.safety_limited) == (b.safety_clipped, b.safety_limited)
    assert len(stored.chunks) == len(original.chunks)
    for a, b in zip(stored.chunks, original.chunks, strict=True):
        assert np.array_equal(a.actions, b.actions) and np.array_equal(a.step_log_prob, b.step_log_prob)
    for a, b in zip(stored.chunk_observations, original.chunk_observations, strict=True):
        assert np.array_equal(a.images["top"], b.images["top"])


def test_an_episode_reads_back_exactly_on_both_backends(store_uri: str) -> None:
    store = EpisodeStore(store_uri)
    episode = synthetic_episode(steps=11)
    store.write_episode(episode)
    assert [r.episode_id for r in store.records()] == [episode.meta.episode_id]
    stored = store.read_episode(episode.meta.episode_id)
    assert_same_episode(stored, episode)
    assert stored.reward == 1.0
    assert store.verify().ok


def test_long_episodes_are_streamed_in_blocks_and_read_back(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    episode = synthetic_episode(steps=45)
    with store.writer(chunk_frames=4, flush_frames=8) as writer:
        store.write_episode(episode, writer)
    store.refresh()
    assert_same_episode(store.read_episode(episode.meta.episode_id), episode)
    images = zarr.open_group(tmp_path / "episodes" / episode.meta.episode_id)["images/top"]
    assert images.chunks == (4, 16, 16, 3)


def test_a_plain_zarr_open_reads_an_episode_without_ript_robot(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    episode = synthetic_episode(steps=6)
    store.write_episode(episode)
    root = zarr.open_group(str(tmp_path), mode="r")
    group = root["episodes"][episode.meta.episode_id]
    attrs = group.attrs["ript_episode"]
    assert attrs["context_id"] == episode.meta.context.context_id
    assert attrs["label"]["success"] is True and attrs["policy_version"] == 0
    assert group["images/top"].shape == (6, 16, 16, 3) and group["images/top"].dtype == np.uint8
    assert np.array_equal(group["chunk_log_prob"][0], episode.chunks[0].step_log_prob)
    assert attrs["chunk_starts"] == [0, 4]


def test_an_episode_being_written_is_invisible_until_it_ends(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    episode = synthetic_episode(steps=20)
    writer = store.writer(chunk_frames=4, flush_frames=4)
    writer.begin(episode.meta)
    writer.add_chunk(episode.meta.episode_id, episode.chunks[0], episode.chunk_observations[0])
    for record in episode.steps[:10]:
        writer.add_step(episode.meta.episode_id, record)
    writer.flush()
    assert (tmp_path / "staging" / episode.meta.episode_id / "images").is_dir()  # streamed, not committed
    assert store.refresh().records() == []
    assert store.complete_groups(1) == []
    report = store.verify()
    assert report.ok and report.uncommitted == [episode.meta.episode_id]
    writer.close()


def test_labels_arrive_later_without_touching_the_arrays(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    episode = synthetic_episode(success=None)
    store.write_episode(episode)
    folder = tmp_path / "episodes" / episode.meta.episode_id

    def array_bytes() -> dict[str, str]:
        return {
            str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*")
            if p.is_file() and p != folder / "zarr.json"
        }

    before = array_bytes()
    assert store.records()[0].reward is None
    ended = episode.meta.end_time
    store.add_label(episode.meta.episode_id, Label(False, "operator", labeler="tablet-1", time=ended + 100.0))
    store.add_label(episode.meta.episode_id, Label(True, "operator", labeler="tablet-2", time=ended + 200.0))
    assert array_bytes() == before
    record = EpisodeStore(tmp_path).refresh().records()[0]  # a fresh reader sees the label history
    assert record.reward == 1.0 and record.meta.label.labeler == "tablet-2"
    assert [label.labeler for label in record.labels] == ["tablet-1", "tablet-2"]
    assert zarr.open_group(folder).attrs["ript_episode"]["label"]["labeler"] == "tablet-2"
    with pytest.raises(StoreError, match="no committed episode"):
        store.add_label("nope", Label(True, "operator"))
    with pytest.raises(StoreError, match=f"cannot label {episode.meta.episode_id}: .* before the episode ended"):
        store.add_label(episode.meta.episode_id, Label(False, "operator", time=ended - 1.0))
    assert len(EpisodeStore(tmp_path).refresh().records()[0].labels) == 2  # refused: nothing written


def test_complete_groups_need_k_labeled_rollouts_from_accepted_versions(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    writer = store.writer()
    rollouts = [("a", 3, True), ("a", 3, False), ("a", 3, True), ("b", 3, True), ("b", 3, None), ("c", 1, True)]
    rollouts += [("c", 3, False), ("c", 2, True), ("a", 3, False)]
    for i, (context, version, success) in enumerate(rollouts):
        store.write_episode(synthetic_episode(context, steps=3, success=success, version=version, seed=i), writer)
    writer.close()
    store.refresh()
    groups = store.complete_groups(2, min_version=3, max_version=3)
    assert sorted(g.context.context_id for g in groups) == ["a", "a"]  # b has one label, c one at v3
    assert [g.rewards for g in groups] == [[1.0, 0.0], [1.0, 0.0]]
    stale = store.complete_groups(2, min_version=2, max_version=3)
    assert sorted(g.context.context_id for g in stale) == ["a", "a", "c"]
    used = {r.episode_id for g in groups for r in g.records}
    assert store.complete_groups(2, min_version=3, exclude=used) == []


def test_a_corrupted_chunk_is_named_by_verify_and_skipped_by_the_reader(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    good, bad = synthetic_episode(seed=1, steps=20), synthetic_episode(seed=2, steps=20)
    store.write_episode(good)
    store.write_episode(bad)
    chunk = tmp_path / "episodes" / bad.meta.episode_id / "images" / "top" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    report = EpisodeStore(tmp_path).verify()
    assert not report.ok and len(report.problems) == 1
    assert bad.meta.episode_id in report.problems[0] and "object 'images/top/c/1/0/0/0'" in report.problems[0]
    with pytest.warns(UserWarning, match=bad.meta.episode_id):
        episodes = store.read_episodes([good.meta.episode_id, bad.meta.episode_id])
    assert [e.meta.episode_id for e in episodes] == [good.meta.episode_id]


def test_index_segments_roll_over_and_refresh_reads_only_what_changed(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    store.index_writer.segment_rows = 3
    for i in range(7):
        store.write_episode(synthetic_episode(f"ctx{i}", steps=2, seed=i))
    segments = sorted(p.name for p in (tmp_path / "index").rglob("*.json"))
    assert segments == ["000000.json", "000001.json", "000002.json"]
    index = Index(store.backend).refresh()
    assert len(index.episodes) == 7
    reads = []
    original = store.backend.get
    store.backend.get = lambda path: reads.append(path) or original(path)  # type: ignore[method-assign]
    index.backend = store.backend
    store.write_episode(synthetic_episode("ctx7", steps=2, seed=7))
    index.refresh()
    assert len(index.episodes) == 8 and reads == [p for p in reads if p.endswith("000002.json")] and reads


def test_a_store_of_another_format_or_a_missing_one_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a ript-robot store"):
        EpisodeStore(tmp_path / "empty", create=False)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "ript_store.json").write_text('{"format": 99}')
    with pytest.raises(StoreError, match="format 99"):
        EpisodeStore(tmp_path / "old")
    with pytest.raises(StoreError, match="unsupported store URI"):
        EpisodeStore("ftp://host/store")


def test_the_trainer_reads_while_a_writer_writes(tmp_path: Path) -> None:
    writer_store, reader_store = EpisodeStore(tmp_path), EpisodeStore(tmp_path)
    total, errors, seen = 40, [], []

    def write() -> None:
        with writer_store.writer(chunk_frames=4, flush_frames=4) as writer:
            for i in range(total):
                writer_store.write_episode(synthetic_episode(f"c{i % 5}", steps=9, seed=i), writer)

    thread = threading.Thread(target=write)
    thread.start()
    while thread.is_alive() or len(seen) == 0 or seen[-1] < total:
        try:
            records = reader_store.refresh().records()
            for episode in reader_store.read_episodes(r.episode_id for r in records):
                assert len(episode.steps) == 9
            seen.append(len(records))
        except Exception as exc:  # any failure to read a committed episode is the bug
            errors.append(exc)
            break
        if not thread.is_alive() and seen and seen[-1] < total:
            seen.append(len(reader_store.refresh().records()))
    thread.join()
    assert errors == []
    assert seen == sorted(seen) and seen[-1] == total and len(set(seen)) > 2  # it saw the store grow


def test_a_bad_episode_is_reported_and_the_writer_goes_on(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    bad, good, empty = synthetic_episode(seed=1, steps=6), synthetic_episode(seed=2), synthetic_episode(seed=3)
    bad.steps[3].observation.images["top"] = np.zeros((8, 8, 3), np.uint8)  # the camera changed size
    with store.writer(chunk_frames=2, flush_frames=4) as writer:
        store.write_episode(bad, writer)
        writer.begin(empty.meta)  # stopped before its first step
        writer.end(empty.meta)
        store.write_episode(good, writer)
    assert len(writer.failures) == 1 and bad.meta.episode_id in writer.failures[0]
    assert [r.episode_id for r in store.refresh().records()] == [good.meta.episode_id]
    assert store.verify().ok


def test_episodes_that_keep_only_some_frames_read_back_with_their_steps(store_uri: str) -> None:
    """A simulator that renders only to re-plan (and every 3rd step for the review video)."""
    store = EpisodeStore(store_uri)
    episode = synthetic_episode(steps=13, chunk_size=4)
    kept = [0, 3, 4, 6, 8, 9, 12]
    for step in episode.steps:
        if step.step not in kept:
            step.observation = replace(step.observation, images={})
    with store.writer(chunk_frames=2, flush_frames=4) as writer:  # blocks with and without frames
        store.write_episode(episode, writer)
    stored = store.refresh().read_episode(episode.meta.episode_id)
    assert [s.step for s in stored.steps if s.observation.images] == kept
    for a, b in zip(stored.steps, episode.steps, strict=True):
        assert a.observation.images.keys() == b.observation.images.keys()
        if b.observation.images:
            assert np.array_equal(a.observation.images["top"], b.observation.images["top"])
    assert all(
        np.array_equal(a.images["top"], b.images["top"])
        for a, b in zip(stored.chunk_observations, episode.chunk_observations, strict=True)
    )
    assert store.verify().ok
    assert episode_frames(stored).shape == (len(kept), 16, 16, 3)
    if not store_uri.startswith("s3://"):
        group = zarr.open_group(store_uri, mode="r")["episodes"][episode.meta.episode_id]
        assert list(group["frame_steps"][:]) == kept and group["images/top"].shape[0] == len(kept)


def test_a_camera_that_appears_mid_episode_fails_that_episode_clearly(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    episode = synthetic_episode(steps=6)
    episode.steps[2].observation.images["wrist"] = episode.steps[2].observation.images["top"]
    with store.writer() as writer:
        store.write_episode(episode, writer)
    assert len(writer.failures) == 1 and "step 2 has cameras ['top', 'wrist']" in writer.failures[0]
    assert store.refresh().records() == []


def test_the_final_scene_is_kept_after_the_last_step_for_detectors_and_operators(tmp_path: Path) -> None:
    from conftest import make_env, tiny_policy

    from ript_robot.config import RuntimeConfig
    from ript_robot.envs.pick import make_contexts
    from ript_robot.runtime.loop import run_episodes

    store = EpisodeStore(tmp_path)
    env = make_env(max_steps=6)
    writer = store.writer()
    (episode,) = run_episodes(
        [env], make_contexts("workcell", [0])[:1], tiny_policy(), RuntimeConfig(execute_steps=4), writer
    )
    writer.close()
    steps = episode.meta.num_steps
    group = zarr.open_group(str(tmp_path / "episodes" / episode.meta.episode_id))
    assert list(group["frame_steps"][:]) == [*range(steps), steps]  # every step's frame, then the final scene
    final = store.key_frames(episode.meta.episode_id, 1, last=True)[0]
    assert np.array_equal(final, env.render(closed=episode.meta.end_reason in ("grasped", "missed")))
    read = store.refresh().read_episode(episode.meta.episode_id)  # training reads steps as before
    assert len(read.steps) == steps and all(s.observation.images for s in read.steps)
    assert store.verify().ok


def test_a_persons_steps_are_stored_flagged_and_plain_zarr_sees_them(tmp_path: Path) -> None:
    episode = synthetic_episode(steps=9)
    for step in episode.steps[3:6]:
        step.intervened = True
    episode.meta.interventions, episode.meta.intervened_steps = 1, 3
    store = EpisodeStore(tmp_path)
    store.write_episode(episode)
    stored = store.read_episode(episode.meta.episode_id)
    assert [s.step for s in stored.steps if s.intervened] == [3, 4, 5]
    assert (stored.meta.interventions, stored.meta.intervened_steps) == (1, 3)
    assert stored.reward == 0.0 and stored.meta.label is not None and stored.meta.label.success  # the label stays
    attrs = zarr.open_group(tmp_path / "episodes" / episode.meta.episode_id).attrs["ript_episode"]
    assert attrs["intervened"] == [3, 4, 5] and attrs["interventions"] == 1
    assert store.verify().ok
