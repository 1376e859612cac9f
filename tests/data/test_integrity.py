"""Integrity of committed episodes: generated damage of every kind an object store can do, on disk and on S3.

Each example damages one committed episode's objects (delete, truncate, extend, flip a bit,
replace, swap two, add one) and then restores them: verify must name the episode and the
object, read_episode must refuse it, and the untouched episode must stay clean.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import synthetic_episode

from ript_robot.data import EpisodeCorrupt, EpisodeStore
from ript_robot.data.faults import KINDS, STRAY_NAMES, Damage, restore, snapshot
from ript_robot.data.index import INDEX_PREFIX
from ript_robot.data.integrity import GROUP_METADATA, MANIFEST_ATTR
from ript_robot.types import Episode


@st.composite
def damages(draw: st.DrawFn, originals: dict[str, bytes]) -> Damage:
    names = sorted(originals)
    kind = draw(st.sampled_from(KINDS))
    data = draw(st.binary(min_size=1, max_size=64))
    if kind == "add":
        return Damage(kind, (draw(st.sampled_from(STRAY_NAMES)),), data=data)
    if kind == "swap":
        pair = draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True))
        return Damage(kind, tuple(pair))
    name = draw(st.sampled_from(names))
    return Damage(kind, (name,), draw(st.floats(0.0, 1.0)), draw(st.integers(0, 7)), data)


def two_episodes(uri: str) -> tuple[EpisodeStore, str, str]:
    store = EpisodeStore(uri)
    with store.writer(chunk_frames=4, flush_frames=8) as writer:
        ids = [store.write_episode(synthetic_episode(seed=i, steps=13), writer) for i in range(2)]
    return store.refresh(), ids[0], ids[1]


def assert_same(a: Episode, b: Episode) -> None:
    assert len(a.steps) == len(b.steps)
    for x, y in zip(a.steps, b.steps, strict=True):
        assert np.array_equal(x.action, y.action) and np.array_equal(x.observation.state, y.observation.state)


@pytest.mark.parametrize("examples", [60])
def test_every_generated_damage_is_detected_named_and_never_read(store_uri: str, examples: int) -> None:
    store, victim, bystander = two_episodes(store_uri)
    folder = f"episodes/{victim}/"
    originals = snapshot(store.backend, folder)
    intact = store.read_episode(victim)
    assert store.verify().ok and MANIFEST_ATTR in json.loads(originals[GROUP_METADATA])["attributes"]

    @settings(max_examples=examples if store_uri.startswith("s3") else 3 * examples, deadline=None, database=None)
    @given(damage=damages(originals))
    def check(damage: Damage) -> None:
        if not damage.changes(originals):
            return
        damage.apply(store.backend, folder, originals)
        try:
            report = store.verify()
            assert [p for p in report.problems if bystander in p] == []
            (problem,) = report.problems
            assert victim in problem and any(f"'{name}'" in problem for name in damage.names), problem
            try:
                episode = store.read_episode(victim)
            except EpisodeCorrupt as exc:
                assert victim in str(exc)
            else:  # only the group's label mirror can change without touching what is read (the index holds labels)
                assert damage.names == (GROUP_METADATA,) and "label" in problem
                assert_same(episode, intact)
            store.read_episode(bystander)  # the other episode reads, untouched
        finally:
            restore(store.backend, folder, originals)

    check()
    assert store.verify().ok


def test_an_episode_from_before_manifests_is_unverifiable_not_clean(tmp_path) -> None:
    store, old, new = two_episodes(str(tmp_path))
    # rewrite the store as an older ript-robot left it: no manifest in the group, no seal in the index row
    group = tmp_path / "episodes" / old / "zarr.json"
    meta = json.loads(group.read_text())
    del meta["attributes"][MANIFEST_ATTR]
    group.write_text(json.dumps(meta))
    for segment in (tmp_path / INDEX_PREFIX).rglob("*.json"):
        rows = json.loads(segment.read_text())
        for row in rows:
            if row.get("meta", {}).get("episode_id") == old:
                row.pop("seal")
        segment.write_text(json.dumps(rows))
    report = EpisodeStore(tmp_path).verify()
    assert report.ok and len(report.unverifiable) == 1 and old in report.unverifiable[0]
    (tmp_path / "episodes" / old / "state" / "c" / "0" / "0").unlink()  # reads as zeros: the damage manifests catch
    report = EpisodeStore(tmp_path).verify()
    assert report.ok and "'state' 1 of 1" in report.unverifiable[0]
    store = EpisodeStore(tmp_path).refresh()
    with pytest.raises(EpisodeCorrupt, match=r"'state/c/0/0' is missing"):
        (tmp_path / "episodes" / new / "state" / "c" / "0" / "0").unlink()
        store.read_episode(new)
