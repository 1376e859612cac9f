"""The trainer's ledger: only scheduled, sampled rollouts with settled labels fill a group; holes are re-scheduled."""

from __future__ import annotations

import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ript_robot.data.backend import Backend
from ript_robot.data.index import EpisodeRecord
from ript_robot.data.schedule import Schedule, Slot
from ript_robot.train.ledger import GroupState, Ledger, fills
from ript_robot.types import Context, EpisodeMeta, Label

K = 2
NOW = 1_000_000.0


def contexts(n: int) -> list[Context]:
    return [Context(f"scene/task/{i}", "pick up the red block", i) for i in range(n)]


def record(
    slot: Slot | None, labels: list[Label], sampling: str = "sampled", version: int | None = None
) -> EpisodeRecord:
    v = (slot.policy_version if slot else 0) if version is None else version
    meta = EpisodeMeta(f"ep-{time.perf_counter_ns()}", slot.context if slot else contexts(1)[0], v, "arm", NOW - 500)
    meta.sampling, meta.slot_id, meta.end_time = sampling, slot.slot_id if slot else None, NOW - 400
    return EpisodeRecord(meta, NOW - 400, labels)


def sim(success: bool = True) -> Label:
    return Label(success, "sim", time=NOW - 300)


def ledger(schedule: Schedule, records: list[EpisodeRecord], current: int = 0, staleness: int = 0, now: float = NOW):
    return Ledger(schedule, records, current, staleness, set(), K, now)


def test_a_group_fills_from_its_own_sampled_rollouts_once_every_label_settled(tmp_path: Path) -> None:
    schedule = Schedule(Backend(tmp_path))
    a, b = schedule.write_round(0, contexts(1), K)
    operator = Label(False, "operator", time=NOW - 5, undo_window_s=10.0)
    records = [record(a, [sim(True)]), record(b, [operator])]
    records += [record(None, [sim(False)]), record(a, [sim(False)], sampling="deterministic")]  # not for RIPT
    group = ledger(schedule, records).groups[a.group]
    assert group.state is GroupState.WAITING and group.unlabeled == 1  # the operator may still undo
    group = ledger(schedule, records, now=NOW + 6).groups[a.group]
    assert group.state is GroupState.READY and group.rewards == [1.0, 0.0]
    assert [r.meta.slot_id for r in group.members] == [a.slot_id, b.slot_id]


def test_groups_of_the_staleness_window_stay_outstanding_and_older_ones_are_not_counted(tmp_path: Path) -> None:
    schedule = Schedule(Backend(tmp_path))
    schedule.write_round(0, contexts(2), K)
    schedule.write_round(1, contexts(1), K)
    assert len(ledger(schedule, [], current=1, staleness=1).in_state(GroupState.WAITING)) == 3
    assert len(ledger(schedule, [], current=1, staleness=0).in_state(GroupState.WAITING)) == 1


def test_a_discarded_or_unfit_rollout_leaves_a_hole_its_replacement_fills(tmp_path: Path) -> None:
    schedule = Schedule(Backend(tmp_path))
    a, b = schedule.write_round(0, contexts(1), K)
    discard = Label(False, "operator", time=NOW - 100, discarded=True, undo_window_s=10.0)
    records = [record(a, [sim(True)]), record(b, [discard])]
    assert ledger(schedule, records, current=1, staleness=1).holes() == [b]
    (c,) = schedule.write_replacements(1, [b])
    assert c.group == a.group and c.replaces == b.slot_id
    view = ledger(schedule, records, current=1, staleness=1)
    assert view.holes() == [] and view.groups[a.group].state is GroupState.WAITING
    view = ledger(schedule, [*records, record(c, [sim(False)])], current=1, staleness=1)
    group = view.groups[a.group]
    assert group.state is GroupState.READY and group.mixed  # the documented fallback: a replacement ran v1
    unfit = record(a, [sim(True)], version=1)  # claims a v0 slot but ran v1
    assert not fills(unfit, a) and ledger(schedule, [unfit], current=1, staleness=1).unfit == [unfit]


def test_only_claimed_slots_never_committed_are_lost(tmp_path: Path) -> None:
    schedule = Schedule(Backend(tmp_path))
    a, b, c, _ = schedule.write_round(0, contexts(2), K)
    claimed = {s.slot_id for s in schedule.claim(0, "arm", 3)}
    view = ledger(schedule, [record(a, [])])  # committed, waiting for its label: not lost
    assert view.lost(claimed) == [b, c] and view.backlog() == 1


label_rows = st.lists(
    st.builds(
        lambda success, source, age, window, retracted, discarded: Label(
            success, source, time=NOW - age, undo_window_s=window if source == "operator" else 0.0,
            retracted=retracted, discarded=discarded and source == "operator",
        ),
        st.booleans(), st.sampled_from(["sim", "operator", "detector"]), st.floats(0, 60), st.sampled_from([0.0, 10.0]),
        st.booleans(), st.booleans(),
    ),
    max_size=3,
).map(lambda rows: sorted(rows, key=lambda label: label.time))  # fmt: skip
episode = st.one_of(
    st.none(), st.tuples(label_rows, st.sampled_from(["sampled", "deterministic", "none"]), st.sampled_from([0, 1]))
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(per_slot=st.lists(episode, min_size=4, max_size=4), used=st.booleans())
def test_generated_stores_never_fill_a_group_with_what_ript_may_not_learn_from(tmp_path_factory, per_slot, used):
    schedule = Schedule(Backend(tmp_path_factory.mktemp("store")))
    slots = schedule.write_round(0, contexts(2), K)
    records = [record(s, labels, sampling, version) for s, e in zip(slots, per_slot, strict=True) if e
               for labels, sampling, version in [e]]  # fmt: skip
    used_ids = {records[0].episode_id} if used and records else set()
    view = Ledger(schedule, records, 0, 0, used_ids, K, NOW)
    by_id = {s.slot_id: s for s in slots}
    for group in view.groups.values():
        if group.state is GroupState.READY:
            assert len(group.members) == K and not used_ids & {r.episode_id for r in group.members}
            for member, label in zip(group.members, group.labels, strict=True):
                assert fills(member, by_id[member.meta.slot_id]) and by_id[member.meta.slot_id].group == group.group_id
                assert label is member.labels[-1] and label.settled(NOW) and not (label.retracted or label.discarded)
        for hole in group.holes:
            r = group.episodes[hole.slot_id]
            assert not fills(r, hole) or r.discarded
        if any(r.episode_id in used_ids for r in group.episodes.values()):
            assert group.state is GroupState.USED
